"""Experiments: cached, resumable stage graphs over seeds and arms (``midtrain experiment run``), reports with
tables and plots (``midtrain report``) and the controlled CPU demo (``midtrain demo``)."""
