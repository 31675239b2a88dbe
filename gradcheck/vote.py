"""The vote: who agrees with whom, group by group, and who is outvoted.

Every implementation (the backends, the reference's float64 run and the finite-difference
witness) is compared with the reference; two that both part from it are compared with each
other, so that several that agree among themselves outvote it. Where one bloc of at least two is
larger than every other, everyone outside it is wrong on that group of quantities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from gradcheck import explain
from gradcheck.compare import Check, Outputs, against_outputs, against_witness
from gradcheck.finite_diff import FINITE_DIFFERENCES, NetworkWitness
from gradcheck.tolerance import Horizon, Magnitudes, Tolerances

#: The public names, as the API reference shows them.
__all__ = ["GROUPS", "ORACLE_GROUPS", "Jury", "group_of", "verdicts"]

#: Quantities voted on together, in the order they are computed; the oracle votes on the first
#: three, which it measures itself.
GROUPS: dict[str, tuple[str, ...]] = {
    "predictions": ("predictions",),
    "loss": ("loss",),
    "gradient": ("gradient",),
    "training run": ("train losses", "train params"),
}
ORACLE_GROUPS = ("predictions", "loss", "gradient")


def group_of(quantity: str) -> str:
    """The group of `GROUPS` a quantity is voted on in."""
    return next(group for group, quantities in GROUPS.items() if quantity in quantities)


class Jury:
    """Who agrees with whom, group by group, from comparisons made only when a vote needs them.

    Everyone is compared with the reference; two implementations that both part from it are
    compared with each other, so that several that agree among themselves outvote it.
    ``tolerance(name)`` gives the tolerances an implementation is held to; ``voters`` are the
    implementations that vote (default: all), the others are only compared.
    """

    def __init__(
        self,
        reference: str,
        outputs: dict[str, Outputs],
        witness: NetworkWitness | None,
        tolerance: Callable[[str], Tolerances],
        magnitudes: Magnitudes,
        horizon: Horizon,
        voters: Sequence[str] | None = None,
    ) -> None:
        self.reference = reference
        self.outputs = outputs
        self.voters = list(outputs) if voters is None else list(voters)
        self.witness = witness
        self.tolerance = tolerance
        self.magnitudes = magnitudes
        self.horizon = horizon
        self._checks: dict[tuple[str, str], list[Check]] = {}

    @property
    def members(self) -> list[str]:
        """Everyone compared: the witness first, when there is one, then the backends."""
        return [*([FINITE_DIFFERENCES] if self.witness is not None else []), *self.outputs]

    def checks(self, name: str, against: str) -> list[Check]:
        """``name``'s checks against ``against``'s outputs (one of them may be the witness)."""
        key = (name, against)
        if key not in self._checks:
            # the looser of the two: a float32 run is held to float32's tolerance on either side
            tol = max(self.tolerance(name), self.tolerance(against), key=lambda t: t.point)
            if FINITE_DIFFERENCES in key:
                assert self.witness is not None
                other = against if name == FINITE_DIFFERENCES else name
                checks = against_witness(
                    name, self.outputs[other], self.witness, tol.point, self.magnitudes
                )
            else:
                checks = against_outputs(
                    name, self.outputs[name], self.outputs[against], tol.point, tol.trajectory,
                    self.magnitudes, self.horizon,
                )  # fmt: skip
            self._checks[key] = [dataclasses.replace(c, oracle=against) for c in checks]
        return self._checks[key]

    def agree(self, a: str, b: str, group: str) -> bool:
        if b == self.reference:
            a, b = b, a
        checks = self.checks(b, a)  # measured against the reference when it is one of them
        return all(c.ok for c in checks if group_of(c.quantity) == group)

    def blocs(self, group: str, members: Sequence[str]) -> list[list[str]]:
        """``members`` partitioned into blocs that agree on ``group``, the reference's first;
        each joins the first bloc whose first member it agrees with."""
        partition: list[list[str]] = []
        for name in members:
            bloc = next((b for b in partition if self.agree(b[0], name, group)), None)
            if bloc is None:
                partition.append([name])
            else:
                bloc.append(name)
        return partition

    def every_bloc(self) -> dict[str, list[list[str]]]:
        """Every group's blocs; the witness votes on what it measures, and a run that does
        not reproduce itself leaves nothing to vote on."""
        partitions = {}
        for group in GROUPS:
            if group == "training run" and not self.horizon.comparable:
                continue
            members = list(self.voters)
            if self.witness is not None and group in ORACLE_GROUPS:
                members.append(FINITE_DIFFERENCES)
            partitions[group] = self.blocs(group, members)
        return partitions

    def finding(self, name: str, group: str, against: str) -> str:
        """The worst of ``name``'s checks on ``group`` against ``against``. (Agreement within
        a tolerance is not transitive: a member of the reference's bloc can be outvoted by a
        bloc whose first member it happens to agree with.)"""
        checks = [c for c in self.checks(name, against) if group_of(c.quantity) == group]
        return max(checks, key=lambda c: c.error / c.tolerance).finding()

    def verdicts(self) -> list[str]:
        """One sentence per implementation found wrong (`verdicts`)."""
        return verdicts(self.reference, self.every_bloc(), self.finding)


def verdicts(
    reference: str,
    blocs: dict[str, list[list[str]]],
    finding: Callable[[str, str, str], str],
) -> list[str]:
    """One sentence per implementation found wrong, from who agrees with whom.

    ``blocs[group]`` partitions the implementations that voted on a group of quantities into
    sets that agree with each other, the reference's first. Where one bloc of at least two is
    larger than every other, everyone outside it is wrong on that group; otherwise there is no
    majority and the sentence says so. An implementation wrong on several groups gets one
    sentence: every implementation that outvoted it, and the finding (``finding(name, group,
    against)``, ``against`` a member of the majority) of the first group where it parted.
    """
    blamed: dict[str, tuple[list[str], str]] = {}
    ties = []
    for group, partition in blocs.items():
        if len(partition) < 2:
            continue
        largest = max(len(bloc) for bloc in partition)
        majority = [bloc for bloc in partition if len(bloc) == largest]
        if largest < 2 or len(majority) > 1:
            described = [
                explain.listing([_label(reference, n) for n in bloc]) for bloc in partition
            ]
            ties.append(f"no majority on the {group}: {' against '.join(described)}")
            continue
        [winners] = majority
        for bloc in partition:
            for name in bloc:
                if bloc is winners:
                    continue
                if name not in blamed:
                    blamed[name] = ([], finding(name, group, winners[0]))
                witnesses, first = blamed[name]
                blamed[name] = ([*witnesses, *(w for w in winners if w not in witnesses)], first)
    sentences = []
    for name, (witnesses, first) in blamed.items():
        subject = _label(reference, name)
        verb = "disagree" if name == FINITE_DIFFERENCES else "disagrees"
        sentences.append(f"{subject} {verb} with {explain.listing(witnesses)}: {first}")
    return sentences + ties


def _label(reference: str, name: str) -> str:
    if name == reference:
        return f"the reference {name}"
    return f"the {name}" if name == FINITE_DIFFERENCES else name
