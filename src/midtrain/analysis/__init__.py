"""Checkpoint analysis (PRISM's mechanism): streamed weight-change statistics (``midtrain analyze weights``),
linear CKA of hidden states (``midtrain analyze cka``) and their plots."""
