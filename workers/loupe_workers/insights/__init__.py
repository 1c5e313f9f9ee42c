"""What a version says about itself: health and drift analysis and the HTML report."""
