"""Checks that cross files: every provider, model, chain and group a route names exists; no cycles."""

from __future__ import annotations

from collections.abc import Iterator

from inferrelay.config.mappings import MappingsFile, Target
from inferrelay.config.providers import LocalProvider, Provider, RemoteProvider
from inferrelay.config.yaml_lines import KeyPath

Problem = tuple[KeyPath, str]


def cross_check(mappings: MappingsFile, providers: dict[str, Provider], local_models: set[str]) -> list[Problem]:
    """Problems as (key path in model-mappings.yaml, message)."""
    problems = [
        problem
        for path, target in _targets(mappings)
        for problem in _check_target(path, target, mappings, providers, local_models)
    ]
    for name, group in mappings.load_balancing.items():
        for index, member in enumerate(group.members):
            as_target = Target(provider=member.provider, model=member.model)
            path = ("load_balancing", name, "members", index)
            problems += _check_target(path, as_target, mappings, providers, local_models)
    problems += _chain_cycles(mappings)
    return problems


def _targets(mappings: MappingsFile) -> Iterator[tuple[KeyPath, Target]]:
    for name, target in mappings.exact_matches.items():
        yield ("exact_matches", name), target
    for index, route in enumerate(mappings.patterns):
        yield ("patterns", index), route
    for capability, target in mappings.capabilities.items():
        yield ("capabilities", capability.value), target
    for chain, steps in mappings.fallback_chains.items():
        for index, step in enumerate(steps):
            yield ("fallback_chains", chain, index), step


def _check_target(
    path: KeyPath, target: Target, mappings: MappingsFile, providers: dict[str, Provider], local_models: set[str]
) -> list[Problem]:
    if target.chain is not None and target.chain not in mappings.fallback_chains:
        return [((*path, "chain"), f"unknown fallback chain {target.chain!r}{_known(mappings.fallback_chains)}")]
    if target.group is not None and target.group not in mappings.load_balancing:
        return [((*path, "group"), f"unknown load-balancing group {target.group!r}{_known(mappings.load_balancing)}")]
    if target.provider is None:
        return []
    provider = providers.get(target.provider)
    if provider is None:
        return [((*path, "provider"), f"unknown provider {target.provider!r} (providers.yaml{_known(providers)})")]
    if target.model is None:
        return []
    if isinstance(provider, LocalProvider) and target.model not in local_models:
        return [((*path, "model"), f"no local model {target.model!r}{_known(local_models)}")]
    if isinstance(provider, RemoteProvider) and provider.models and target.model not in provider.models:
        return [((*path, "model"), f"provider {target.provider!r} does not list model {target.model!r}")]
    return []


def _chain_cycles(mappings: MappingsFile) -> list[Problem]:
    """A chain whose steps lead back to itself would walk forever."""
    edges = {
        name: [step.chain for step in steps if step.chain is not None]
        for name, steps in mappings.fallback_chains.items()
    }
    problems: list[Problem] = []
    for start in edges:
        seen: list[str] = []
        current = [start]
        while current:
            name = current.pop()
            for nxt in edges.get(name, []):
                if nxt == start:
                    loop = " -> ".join([start, *seen, start]) if seen else f"{start} -> {start}"
                    problems.append((("fallback_chains", start), f"fallback chains form a cycle: {loop}"))
                    current = []
                    break
                if nxt not in seen:
                    seen.append(nxt)
                    current.append(nxt)
    return problems


def _known(names: object) -> str:
    listed = ", ".join(sorted(str(n) for n in names))  # type: ignore[attr-defined]
    return f"; known: {listed}" if listed else "; none is defined"
