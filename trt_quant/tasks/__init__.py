"""Tasks: one module per task (head, rows and labels, feeds, metric, QAT batches), found by name in ``registry``."""
