"""Route handlers, split by route family."""
