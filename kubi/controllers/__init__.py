"""Controllers: each reconciles one kind through informers, a work queue and the client."""
