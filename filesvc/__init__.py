"""filesvc: the files REST API of a Twake-style workplace, over a content-addressed store."""
