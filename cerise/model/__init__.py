"""Pure domain logic: job states, CWL checks, resource specifications."""
