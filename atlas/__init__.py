"""Knowledge circuits atlas."""
