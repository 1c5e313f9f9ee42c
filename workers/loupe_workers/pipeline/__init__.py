"""Running a dataset: the stages of one run, where per-object work executes, and embedded retraining."""
