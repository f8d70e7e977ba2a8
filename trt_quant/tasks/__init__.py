"""Tasks: what each task's model returns, its rows, labels and metric."""
