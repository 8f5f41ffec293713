"""Connect CA tables of the state store: the roots, the cluster ID and the signing keys.

Job: hold the replicated CA rows and apply `CARootsSetRequest` and
`CAConfigSetRequest` to them, stamping raft indexes and bumping the index
keys "connect-ca-roots" and "connect-ca-config".

Rules:
- Only `fsm.apply` calls `set_roots`; it is deterministic (the root, its key
  and the cluster ID arrive in the command) and refuses a write by raising
  CAStateError.
- Check-and-set: a write names the roots' index it saw (`cas_index`, 0 for
  "none yet"); any other index is refused, so two leaders racing to create
  the first root cannot both win.
- At most one root is active; the cluster ID, once set, never changes.
- `signing_keys` (root ID -> private key PEM) is the built-in provider's
  state, as Consul keeps it: replicated and snapshotted so any new leader can
  sign, but never part of a row, a read result, a repr or a log line.
- A write that changes nothing but indexes bumps nothing.
- The configuration (`CAConfiguration`) is check-and-set on its own index
  (`config_cas_index`); a configuration write that carries roots (a rotation,
  or the first initialization) applies both or neither, as Consul's
  set-roots-config does.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from proconsul.structs.commands import CAConfigSetRequest, CARootsSetRequest
from proconsul.structs.connect import CAConfiguration, CARoot, IndexedCARoots

ROOTS_KEY = "connect-ca-roots"
CONFIG_KEY = "connect-ca-config"


class CAStateError(Exception):
    """A refused CA write; the FSM turns it into an ApplyError."""


class CASnapshot(msgspec.Struct, array_like=True):
    """Every CA row, the cluster ID and the signing keys. APPEND-ONLY fields."""

    roots: list[CARoot]
    cluster_id: str
    signing_keys: dict[str, str]
    index: int  # of the last change to the roots
    config: CAConfiguration | None = None

    def __repr__(self) -> str:  # the keys must not reach a log through a repr
        return f"CASnapshot(roots={len(self.roots)}, cluster_id={self.cluster_id!r})"


def _same(a: CARoot, b: CARoot) -> bool:
    return msgspec.structs.replace(a, create_index=0, modify_index=0) == msgspec.structs.replace(
        b, create_index=0, modify_index=0
    )


class CATables:
    def __init__(self, bump: Callable[[int, str], None]) -> None:
        self._bump = bump
        self.roots: dict[str, CARoot] = {}  # id -> row, in the order the writer gave
        self.cluster_id = ""
        self._signing_keys: dict[str, str] = {}  # root id -> private key PEM
        self.index = 0  # of the last change to the roots: what CAS compares
        self.config: CAConfiguration | None = None

    def __repr__(self) -> str:
        return f"CATables(roots={len(self.roots)}, cluster_id={self.cluster_id!r})"

    # ----- snapshot ----------------------------------------------------------------

    def snapshot(self) -> CASnapshot:
        return CASnapshot(
            roots=list(self.roots.values()),
            cluster_id=self.cluster_id,
            signing_keys=dict(self._signing_keys),
            index=self.index,
            config=self.config,
        )

    def restore(self, snap: CASnapshot | None) -> None:
        """`None`: a snapshot from before the CA existed, which restores empty."""
        self.roots, self.cluster_id, self._signing_keys, self.index = {}, "", {}, 0
        self.config = None
        if snap is None:
            return
        self.config = snap.config
        self.roots = {root.id: root for root in snap.roots}
        self.cluster_id = snap.cluster_id
        self._signing_keys = {k: v for k, v in snap.signing_keys.items() if k in self.roots}
        self.index = snap.index

    # ----- reads -------------------------------------------------------------------

    def roots_index(self) -> int:
        """The index of the last change to the roots (0: never set): the CAS input."""
        return self.index

    def active_root(self) -> CARoot | None:
        for root in self.roots.values():
            if root.active:
                return root
        return None

    def active_signing(self) -> tuple[str, str] | None:
        """(certificate PEM, private key PEM) of the active root, if its key is held."""
        root = self.active_root()
        if root is None:
            return None
        key = self._signing_keys.get(root.id)
        return None if key is None else (root.root_cert, key)

    def signing_key(self, root_id: str) -> str | None:
        """The private key PEM of root `root_id` (leader-side signing and
        cross-signing only; never shown)."""
        return self._signing_keys.get(root_id)

    def config_index(self) -> int:
        return self.config.modify_index if self.config is not None else 0

    def has_signing_key(self, root_id: str) -> bool:
        return root_id in self._signing_keys

    def trust_domain(self) -> str:
        return f"{self.cluster_id}.consul" if self.cluster_id else ""

    def view(self) -> IndexedCARoots:
        """What /v1/connect/ca/roots shows: rows only, never a key."""
        active = self.active_root()
        return IndexedCARoots(
            active_root_id=active.id if active is not None else "",
            trust_domain=self.trust_domain(),
            roots=list(self.roots.values()),
        )

    # ----- writes ------------------------------------------------------------------

    def set_roots(self, index: int, request: CARootsSetRequest) -> None:
        current = self.roots_index()
        if request.cas_index != current:
            raise CAStateError(
                f"CAS failed: the CA roots are at index {current}, not {request.cas_index}"
            )
        if not request.cluster_id:
            raise CAStateError("Missing cluster ID for the CA roots")
        if self.cluster_id and request.cluster_id != self.cluster_id:
            raise CAStateError("The cluster ID of the CA cannot change")
        ids = [root.id for root in request.roots]
        if any(not root.id or not root.root_cert for root in request.roots):
            raise CAStateError("Missing CA root ID or RootCert")
        if len(set(ids)) != len(ids):
            raise CAStateError("Duplicate CA root ID")
        if sum(1 for root in request.roots if root.active) > 1:
            raise CAStateError("More than one active CA root")
        unknown = set(request.signing_keys) - set(ids)
        if unknown:
            raise CAStateError("Signing key given for a root that is not in the request")
        keys = {k: v for k, v in self._signing_keys.items() if k in ids}
        keys.update(request.signing_keys)
        rows: dict[str, CARoot] = {}
        changed = list(self.roots) != ids or keys != self._signing_keys
        for given in request.roots:
            # Rows are copied: the command (kept in the log, maybe in a cache)
            # must not see the indexes stamped here.
            root = msgspec.structs.replace(given)
            existing = self.roots.get(root.id)
            if existing is not None and _same(existing, root):
                rows[root.id] = existing
                continue
            root.create_index = existing.create_index if existing is not None else index
            root.modify_index = index
            rows[root.id] = root
            changed = True
        self.cluster_id = request.cluster_id
        if not changed:
            return
        self.roots = rows
        self._signing_keys = keys
        self.index = index
        self._bump(index, ROOTS_KEY)

    def set_config(self, index: int, request: CAConfigSetRequest) -> None:
        """Apply a configuration, with its roots when it carries any (both or neither)."""
        current = self.config_index()
        if request.config_cas_index != current:
            raise CAStateError(
                f"CAS failed: the CA configuration is at index {current}, "
                f"not {request.config_cas_index}"
            )
        if request.roots is not None:
            self.set_roots(
                index,
                CARootsSetRequest(
                    roots=request.roots,
                    cluster_id=request.cluster_id,
                    signing_keys=request.signing_keys,
                    cas_index=request.cas_index,
                ),
            )
        config = msgspec.structs.replace(request.config)
        old = self.config
        if old is not None and msgspec.structs.replace(
            old, create_index=0, modify_index=0
        ) == msgspec.structs.replace(config, create_index=0, modify_index=0):
            return
        config.create_index = old.create_index if old is not None else index
        config.modify_index = index
        self.config = config
        self._bump(index, CONFIG_KEY)
