"""Everything that happens on a compute resource: connections, scripts, schedulers, staging."""
