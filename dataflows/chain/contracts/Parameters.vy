# pragma version ~=0.4.0
"""
@title hedgeflow premium parameters (k-of-n multi-signature)
@notice The premium calculator's parameters, a name -> int256 map in micro-units
        (e.g. "base_vol_micro" = 550000 for 0.55). A change is proposed by an owner
        (the proposal counts as the proposer's approval), approved by other distinct
        owners, and applied by `execute` once it holds `threshold` approvals.
        Approving twice reverts; executing with fewer approvals reverts; a proposal
        older than `proposal_ttl` seconds can no longer be approved or executed.
        Owners and threshold are fixed at deployment.
"""

MAX_OWNERS: constant(uint256) = 16
MAX_PARAMS: constant(uint256) = 64

struct Proposal:
    name: String[64]
    value: int256
    proposer: address
    created_at: uint256
    approvals: uint256
    executed: bool

event Proposed:
    proposal_id: indexed(uint256)
    proposer: indexed(address)
    name: String[64]
    value: int256

event Approved:
    proposal_id: indexed(uint256)
    owner: indexed(address)
    approvals: uint256

event Executed:
    proposal_id: indexed(uint256)
    name: String[64]
    old_value: int256
    new_value: int256
    version: uint256

owners: public(DynArray[address, MAX_OWNERS])
is_owner: public(HashMap[address, bool])
threshold: public(uint256)
proposal_ttl: public(uint256)

proposal_count: public(uint256)
proposals: HashMap[uint256, Proposal]
approved: public(HashMap[uint256, HashMap[address, bool]])

values: HashMap[String[64], int256]
is_set: public(HashMap[String[64], bool])
names: public(DynArray[String[64], MAX_PARAMS])
version: public(uint256)


@deploy
def __init__(owners: DynArray[address, MAX_OWNERS], threshold: uint256, proposal_ttl: uint256):
    assert len(owners) > 0, "params: no owners"
    assert threshold > 0 and threshold <= len(owners), "params: bad threshold"
    assert proposal_ttl > 0, "params: ttl is 0"
    for o: address in owners:
        assert o != empty(address), "params: zero address"
        assert not self.is_owner[o], "params: duplicate owner"
        self.is_owner[o] = True
    self.owners = owners
    self.threshold = threshold
    self.proposal_ttl = proposal_ttl


@internal
def _only_owner():
    assert self.is_owner[msg.sender], "params: not owner"


@internal
@view
def _live(pid: uint256) -> Proposal:
    assert pid > 0 and pid <= self.proposal_count, "params: unknown proposal"
    p: Proposal = self.proposals[pid]
    assert not p.executed, "params: already executed"
    assert block.timestamp <= p.created_at + self.proposal_ttl, "params: proposal expired"
    return p


@external
def propose(name: String[64], new_value: int256) -> uint256:
    self._only_owner()
    assert len(name) > 0, "params: empty name"
    assert self.is_set[name] or len(self.names) < MAX_PARAMS, "params: too many names"
    pid: uint256 = self.proposal_count + 1
    self.proposal_count = pid
    self.proposals[pid] = Proposal(name=name, value=new_value, proposer=msg.sender,
                                   created_at=block.timestamp, approvals=1, executed=False)
    self.approved[pid][msg.sender] = True
    log Proposed(proposal_id=pid, proposer=msg.sender, name=name, value=new_value)
    log Approved(proposal_id=pid, owner=msg.sender, approvals=1)
    return pid


@external
def approve(proposal_id: uint256):
    self._only_owner()
    p: Proposal = self._live(proposal_id)
    assert not self.approved[proposal_id][msg.sender], "params: already approved"
    self.approved[proposal_id][msg.sender] = True
    n: uint256 = p.approvals + 1
    self.proposals[proposal_id].approvals = n
    log Approved(proposal_id=proposal_id, owner=msg.sender, approvals=n)


@external
def execute(proposal_id: uint256):
    self._only_owner()
    p: Proposal = self._live(proposal_id)
    assert p.approvals >= self.threshold, "params: too few approvals"
    self.proposals[proposal_id].executed = True
    old: int256 = self.values[p.name]
    if not self.is_set[p.name]:
        self.is_set[p.name] = True
        self.names.append(p.name)
    self.values[p.name] = p.value
    self.version += 1
    log Executed(proposal_id=proposal_id, name=p.name, old_value=old, new_value=p.value,
                 version=self.version)


@external
@view
def get(name: String[64]) -> int256:
    assert self.is_set[name], "params: unknown name"
    return self.values[name]


@external
@view
def get_proposal(proposal_id: uint256) -> Proposal:
    assert proposal_id > 0 and proposal_id <= self.proposal_count, "params: unknown proposal"
    return self.proposals[proposal_id]


@external
@view
def param_count() -> uint256:
    return len(self.names)


@external
@view
def owner_count() -> uint256:
    return len(self.owners)
