"""Event-flow capabilities: fan-out, outbox, once, tenants, fairness, coalescing, rate limits."""
