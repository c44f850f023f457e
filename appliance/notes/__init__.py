"""Note processing on the box: PHI redaction (an OpenVINO token tagger plus recognizers) and
medication and diagnosis mentions with their ConText modifiers. See ARCHITECTURE.md, "Notes"."""
