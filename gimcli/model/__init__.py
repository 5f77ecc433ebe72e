"""The Generative Intervention Model: a causal model over genes and a network of interventions."""
