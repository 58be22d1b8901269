"""The service's HTTP endpoints, one module per resource."""
