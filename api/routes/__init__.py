"""HTTP routes, one blueprint per capability."""
