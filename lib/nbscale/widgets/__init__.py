"""ipywidgets views of nbscale's state: they render it and never own it."""
