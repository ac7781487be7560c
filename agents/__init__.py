"""S2: one module per stream of work.  Each agent reads raw events in
batches, hands them to ``streamapp.pipeline`` and its stores, and lets Faust
commit offsets only after the batch is durable."""
