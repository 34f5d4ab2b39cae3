"""Where the target and the fleet run: the :class:`Platform` protocol.

A platform deploys the target's first version, serves it at one URL for the
fleet, replaces it by a rolling upgrade, names the extra scrape targets it
offers Prometheus (a load balancer's exporter, say) and removes everything
at the end. ``local`` is built in; others come from the
``pytest_rollout_make_platform`` hook.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, TypeVar, runtime_checkable

from pytest_rollout.errors import RolloutUsageError

if TYPE_CHECKING:
    from pytest_rollout.load.fleet import Fleet
    from pytest_rollout.load.protocol import Aim

__all__ = [
    "Platform",
    "SCHEMES",
    "TargetOptions",
    "TargetSpec",
    "UNSET",
    "Unset",
    "UpgradeEvent",
    "UpgradeResult",
    "unset_if_none",
]

_T = TypeVar("_T")


class Unset(enum.Enum):
    """The type of :data:`UNSET`: a setting that a call did not give (httpx's sentinel for "not given")."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: A setting not given, so inherited. Distinct from ``None``, which a call can give, and which is then checked as a
#: value (``rollout.deploy(replicas=None)`` is refused as it always was, never read as "the default").
UNSET: Final = Unset.UNSET


def unset_if_none(value: _T | None) -> _T | Unset:
    """*value*, or :data:`UNSET` for ``None``: for a parameter whose documented ``None`` means "not given"."""
    return UNSET if value is None else value


#: How a version is given, exactly one of them per call: never inherited from the version before.
_FORMS = ("command", "image", "manifests")


@dataclass(frozen=True, kw_only=True)
class TargetOptions:
    """What one ``rollout.deploy()`` / ``upgrade()`` call gave, as given; :data:`UNSET`: not given.

    A setting not given is inherited, in one place (:meth:`inherit`): from the deployed version on
    ``upgrade()``, from the platform's and the built-in defaults on ``deploy()``. Every check is in one place
    too, :meth:`TargetSpec.build`. The forms (*command*, *image*, *manifests*) are never inherited: ``None`` is
    "not this form". A new option is: a parameter of ``Rollout.deploy()`` and ``Rollout.upgrade()``
    (:mod:`pytest_rollout.run.rollout`) passed on here, a field here (and its default in ``_DEFAULTS``), its
    check in ``build``, its field on :class:`TargetSpec`, and the platform that reads it.
    """

    command: Sequence[str | os.PathLike[str]] | None = None
    image: str | None = None
    manifests: Sequence[str | os.PathLike[str]] | None = None
    replicas: int | Unset = UNSET
    ready_path: str | Unset = UNSET
    env: Mapping[str, str] | None | Unset = UNSET  # None: no variables of its own
    ready_timeout: float | Unset = UNSET
    grace_period: float | Unset = UNSET
    cwd: str | os.PathLike[str] | None | Unset = UNSET  # None: the current directory
    port: int | Unset = UNSET
    pre_stop: float | str | Unset = UNSET
    scheme: str | Unset = UNSET  # "http" or "https": how the replicas (and so the fleet's url) are spoken to

    def inherit(self, base: TargetOptions) -> TargetOptions:
        """These options, each setting not given here taken from *base*; the version itself never is."""
        taken = {
            f.name: getattr(base, f.name)
            for f in fields(self)
            if f.name not in _FORMS and getattr(self, f.name) is UNSET
        }
        return replace(self, **taken)


#: A version's settings when neither the call nor the platform gives them (no cwd: the current directory).
_DEFAULTS = TargetOptions(
    replicas=1,
    ready_path="/healthz",
    env=MappingProxyType({}),
    ready_timeout=30.0,
    grace_period=10.0,
    cwd=None,
    port=8080,
    pre_stop=0.0,
    scheme="http",
)

#: The schemes a target may speak: ``https`` is TLS end to end (a layer 4 load balancer passes it through).
SCHEMES = ("http", "https")


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """One version of the target, as ``rollout.deploy()`` / ``upgrade()`` describe it: made by :meth:`build`.

    Exactly one of *command* (a process per replica: the ``local`` platform),
    *image* or *manifests* (the ``kubernetes`` platform) is set.
    """

    command: tuple[str, ...]
    version: str
    replicas: int = 1
    ready_path: str = "/healthz"
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 30.0
    grace_period_s: float = 10.0
    cwd: str | None = None
    image: str | None = None
    manifests: tuple[str, ...] = ()
    port: int = 8080
    pre_stop_s: float = 0.0  # lifecycle.preStop.sleep: serve untouched this long before SIGTERM
    scheme: str = "http"  # how replicas are spoken to, readiness checks included: "http" or "https"
    #: the options this version was built from, every setting filled in: what the next version inherits
    options: TargetOptions = field(default_factory=TargetOptions, compare=False, repr=False)

    @property
    def form(self) -> str:
        """``command``, ``image`` or ``manifests``: how this version is described."""
        return "command" if self.command else "image" if self.image else "manifests"

    def describe(self) -> str:
        if self.command:
            return " ".join(self.command)
        if self.image:
            return f"image {self.image}"
        return "manifests " + ", ".join(self.manifests)

    @classmethod
    def build(cls, options: TargetOptions, *, version: str, what: str) -> TargetSpec:
        """Check *options* (settings not given: the built-in defaults) and make version *version* of them.

        *what* (``deploy`` or ``upgrade``) names the call in the :class:`RolloutUsageError` a bad value raises.
        The version keeps its options normalised (its own copy of *env*, seconds as floats, *cwd* a string):
        what the next version inherits, and what its errors quote, whatever the caller does with its values.
        """
        options = options.inherit(_DEFAULTS)
        command, image, manifests = options.command, options.image, options.manifests
        cwd = None if options.cwd is None or options.cwd is UNSET else os.fspath(options.cwd)
        given = [name for name in _FORMS if getattr(options, name) is not None]
        if not given and what == "upgrade":
            raise RolloutUsageError(
                "rollout.upgrade() needs the new version: command=[...], image=... or manifests=[...]"
            )
        if not given:
            raise RolloutUsageError(
                f"rollout.{what}() needs command=[...] (the argv that starts one replica, local platform), "
                "or image=... / manifests=[...] (kubernetes platform)"
            )
        if len(given) > 1:
            raise RolloutUsageError(
                f"rollout.{what}() takes one of command=, image=, manifests=; got {' and '.join(given)}"
            )
        argv: tuple[str, ...] = ()
        if command is not None:
            if isinstance(command, (str, bytes)) or not all(isinstance(a, (str, os.PathLike)) for a in command):
                raise RolloutUsageError(
                    f"rollout.{what}(command=...) must be a list of strings (an argv), got {command!r}"
                )
            argv = tuple(os.fspath(a) for a in command)
            if not argv:
                raise RolloutUsageError(f"rollout.{what}(command=[]) is empty")
        if image is not None and (not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image)):
            raise RolloutUsageError(f"rollout.{what}(image={image!r}) must be an image reference such as 'shop/app:v2'")
        paths: tuple[str, ...] = ()
        if manifests is not None:
            if isinstance(manifests, (str, bytes, os.PathLike)) or not all(
                isinstance(m, (str, os.PathLike)) for m in manifests
            ):
                raise RolloutUsageError(
                    f"rollout.{what}(manifests=...) must be a list of file paths, got {manifests!r}"
                )
            paths = tuple(os.fspath(m) for m in manifests)
            if not paths:
                raise RolloutUsageError(f"rollout.{what}(manifests=[]) is empty")
            base = cwd if cwd is not None else os.getcwd()
            paths = tuple(p if os.path.isabs(p) else os.path.join(base, p) for p in paths)
        replicas, port, ready_path, env = options.replicas, options.port, options.ready_path, options.env
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise RolloutUsageError(f"rollout.{what}(replicas={replicas!r}) must be an int >= 1")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise RolloutUsageError(f"rollout.{what}(port={port!r}) must be a TCP port (1-65535)")
        if not isinstance(ready_path, str) or not ready_path.startswith("/"):
            raise RolloutUsageError(f"rollout.{what}(ready_path={ready_path!r}) must start with '/'")
        env = {} if env is None or env is UNSET else dict(env)  # a copy: the caller's dict may change after the call
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise RolloutUsageError(f"rollout.{what}(env=...) must map str to str")
        if "PORT" in env:
            raise RolloutUsageError(f"rollout.{what}(env=...) must not set PORT: the platform assigns it")
        scheme = options.scheme
        if scheme not in SCHEMES:
            raise RolloutUsageError(
                f"rollout.{what}(scheme={scheme!r}) must be 'http' or 'https' (the replicas serve TLS themselves: "
                "give their certificate in the command, and the fleet's trust in slo(tls_ca=...))"
            )
        ready_timeout_s = _seconds(options.ready_timeout, "ready_timeout", what)
        grace_period_s = _seconds(options.grace_period, "grace_period", what)
        from pytest_rollout.errors import SLOSpecError
        from pytest_rollout.slo import parse_duration

        pre_stop = options.pre_stop
        try:
            pre_stop_s = parse_duration(pre_stop, "pre_stop")
        except SLOSpecError:
            raise RolloutUsageError(
                f"rollout.{what}(pre_stop={pre_stop!r}) must be a duration such as '5s' or a number of seconds >= 0"
            ) from None
        if pre_stop_s >= grace_period_s:
            raise RolloutUsageError(
                f"rollout.{what}(pre_stop={pre_stop!r}) must be shorter than grace_period={options.grace_period!r}: "
                "the grace period counts from the start of termination, preStop included, so SIGKILL would come "
                "before SIGTERM"
            )
        return cls(
            command=argv,
            version=version,
            replicas=replicas,
            ready_path=ready_path,
            env=env,
            ready_timeout_s=ready_timeout_s,
            grace_period_s=grace_period_s,
            cwd=cwd,
            image=image,
            manifests=paths,
            port=port,
            pre_stop_s=pre_stop_s,
            scheme=str(scheme),
            options=replace(
                options,
                env=env,
                ready_timeout=ready_timeout_s,
                grace_period=grace_period_s,
                cwd=cwd,
                pre_stop=pre_stop_s,
            ),
        )


def _seconds(value: object, name: str, what: str) -> float:
    """*value*, a number of seconds > 0, as a float; else what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise RolloutUsageError(f"rollout.{what}({name}={value!r}) must be a number of seconds > 0")
    return float(value)


@dataclass(frozen=True)
class UpgradeEvent:
    """Something that happened to a replica during deploy or upgrade."""

    #: how much earlier than the change *at* may be: a platform may time an event by a record kept in whole
    #: seconds, cut down (the kubernetes API server's timestamps)
    EARLY_S: ClassVar[float] = 1.0

    at: float  # Unix seconds
    action: str  # start, ready, out, exit, failed
    replica: str
    detail: str = ""
    # where the platform knows them, on "out": how the replica is terminated (None: unknown; 0: no preStop)
    pre_stop_s: float | None = None
    grace_period_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at": self.at, "action": self.action, "replica": self.replica, "detail": self.detail}
        if self.pre_stop_s is not None:
            out["pre_stop_s"] = self.pre_stop_s
        if self.grace_period_s is not None:
            out["grace_period_s"] = self.grace_period_s
        return out


@dataclass(frozen=True)
class UpgradeResult:
    start: float
    end: float
    replaced: int
    events: tuple[UpgradeEvent, ...]


@runtime_checkable
class Platform(Protocol):
    """What the ``rollout`` fixture needs from where the target runs: all of it, so the run asks nothing else."""

    name: str
    ready_timeout_s: float  # how long deploy() waits for a version by default
    desired_replicas: int | None  # the target's replicas when the platform knows better than the spec (manifests)
    fleet_cpus: Sequence[int]  # CPUs this machine sets aside for the fleet (empty: the platform places workers)

    @property
    def url(self) -> str:
        """Where the fleet sends its requests (``http://host:port``)."""

    def deploy(self, target: TargetSpec, on_event: Callable[[UpgradeEvent], None]) -> None:
        """Bring up *target* and return once every replica is ready and serving."""

    def upgrade(
        self,
        target: TargetSpec,
        max_surge: int | str | None,
        max_unavailable: int | str | None,
        on_event: Callable[[UpgradeEvent], None],
    ) -> UpgradeResult:
        """Replace the running version by *target*, rolling, under load."""

    def scrape_targets(self, run_id: str) -> list[dict[str, Any]]:
        """Extra file_sd groups for Prometheus (may be empty)."""

    def make_fleet(self, run_id: str, size: int, aim: Aim) -> Fleet:
        """*size* load workers for this run, placed where they reach :attr:`url`.

        Each worker is created able to load only ``aim.target``, with ``aim.secret_headers``, and obeys only
        calls that carry the fleet's own token (see :mod:`pytest_rollout.load.protocol`).
        """

    def rollback(self, on_event: Callable[[UpgradeEvent], None]) -> str:
        """Return the target to the version before the last upgrade; say what was done."""

    def describe(self) -> str:
        """How to reach what runs (for --rollout-keep)."""

    def keep(self) -> None:
        """--rollout-keep: leave what runs, marked so that later runs do not remove it."""

    def teardown(self) -> list[str]:
        """Stop everything; return problems worth reporting (empty when clean)."""
