"""Jobs: inputs and outputs planned (plan.py), the one per-file step (step.py) and its drivers: sequential
(step.py), pipelined (pipelined.py); object storage (storage.py) and the stoppable channel (channel.py)."""
