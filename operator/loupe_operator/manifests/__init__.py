"""Pure builders of the Kubernetes objects the operator creates (KubeRay RayJobs)."""
