"""The combination rule, for the data layer (defined in the base layer, gimcli.combinations,
so that DataKeys can carry it)."""

from gimcli.combinations import DEFAULT, DEFAULT_SEP, DOSE_SEP, NO_SEP, Combinations

__all__ = ["DEFAULT", "DEFAULT_SEP", "DOSE_SEP", "NO_SEP", "Combinations"]
