"""What is shown to the user: the report JSON, the layer table (and its view), BOPs."""
