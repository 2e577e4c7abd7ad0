"""Every registered balancer against the properties in ``properties`` (exclusions and their reasons are there)."""

from tests.balancing.properties import (
    DescentProperty,
    DeterministicProperty,
    NonConflictingProperty,
    PermutationProperty,
    StateRoundTripProperty,
)


class TestEveryBalancer(DeterministicProperty, StateRoundTripProperty, PermutationProperty, NonConflictingProperty, DescentProperty):
    """The registry's methods, each property parametrised over ``BALANCERS.names()``."""
