"""DICOM: the receiver (SCP), the study spool, the result writers and the outbox to PACS."""
