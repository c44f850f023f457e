"""The first-boot provisioning wizard: one screen, one pane per step (``appliance.setup``)."""
