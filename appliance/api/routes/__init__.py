"""Route modules: thin handlers over the services in appliance.api.deps."""
