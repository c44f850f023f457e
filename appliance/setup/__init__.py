"""First-boot provisioning: the wizard's durable progress and the settings its steps write.

Pure checks and small atomic writers, no Textual: the console's wizard screens call these, and a
power cut between two steps loses nothing that a step reported done (``progress.py``).
"""
