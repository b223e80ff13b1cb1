"""The default learner: μLinUCB made to track a changing network and edge.

What it changes against the paper's algorithm (``mu_linucb.py``), and why:

* Decomposed feedback. The offloading delay is modelled as two linear parts,
  network (intercept + bits sent: RTT and inverse bandwidth) and edge compute
  (intercept + the six normalised back-end features). The edge's timing
  acknowledgement says how much of each frame's delay was edge compute, so one
  observation at any split moves both models, and a bandwidth change seen at
  one split re-prices every split at once.
* Normalised features with an intercept, and exploration scaled to the noise
  actually observed (the paper's α on raw MAC counts makes widths meaningless).
* Change detection instead of never forgetting: a two-sided CUSUM on each
  component's standardised residuals, which a lone outlier frame cannot set off (a settled
  model needs a confirmed change); on an alarm the component is re-fit from the observations
  that raised it, with the old model rescaled to them as prior.
* Probing instead of fixed forced sampling: while device-only wins, an offloading
  frame is sent now and then at the split that last beat device-only, as often as its cost
  is worth the delay it saves by noticing a recovered link early (``probe_interval``), and
  again at once when a probe brings good news.
* A change seen at splits that weigh RTT and bandwidth (or fixed overhead and load)
  differently is fitted as both at once; seen at one kind of split it is a guess, fitted
  again at the first observation of the other kind within ``GUESS_LIFE`` frames (later, the
  conditions may have moved again: a guess never joins old and new evidence).
* Change scores are log ratios (a link 20x faster is as plain as one 20x slower), at least
  ``JITTER_S`` wide (a millisecond's wobble of a small part is no change).
* Beliefs decay. A split not observed for ``stale_after`` frames gets an exploration bonus
  that grows with the time since, so a split that looked bad once (a transient, a cold edge)
  is re-checked eventually, the nearly-best ones soonest. Each re-check doubles that split's
  horizon (back-off: logarithmically many re-checks in steady state, so regret stays
  sublinear); a change detected there brings it back to ``stale_after``, and a split that last
  delivered much better than the one in use now is re-checked sooner (the way back from
  device-only). A re-check lasts one frame unless the split then beats the one in use.
* Load is priced apart: the edge's queueing wait (acknowledgements, and the edges' load
  reports for a device that does not offload) is added to every offloading split, and a
  near-tie does not flip the choice (hysteresis), so devices sharing an edge do not herd.
* Recall: while the split in use is estimated much slower than what another split once
  delivered, a frame now and then looks for the conditions it delivered under, paced like a
  probe, at the split that shows them most cheaply (``_recall``): a small request may not show
  that the conditions which made that split dear are gone.
* A token bucket is fitted, not chased: past the burst a request pays only for its bits beyond
  it, a network line with a negative intercept, which a re-fit over two kinds of split may set.
* Key frames are served greedily (no exploration, never a probe).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from .censoring import Censoring
from .change import ChangeDetector
from .persist import StateError, check_header, state_header
from .policy import Feedback, Policy
from .probing import Prober, optimistic_offload
from .profile import BITS_COLUMN, SplitProfile
from .load_price import LoadPrice
from .ridge import ArmRidge
from .staleness import Staleness



class Verdict(enum.Enum):
    """What one observation says of a model part."""

    OK = "ok"  # as expected
    SUSPECT = "suspect"  # far off, or the change detector half-way to an alarm: worth a second look
    CHANGED = "changed"  # a change: the part has been re-fitted to what revealed it


# Module names for the members: an enum member's lookup costs 80 ns, a global's 6 (per-frame path).
OK, SUSPECT, CHANGED = Verdict.OK, Verdict.SUSPECT, Verdict.CHANGED

@dataclass(frozen=True)
class AnsConfig:
    """The learner's hyperparameters, checked once (docs/learner.md says what each does)."""

    key_weight: float = 1.0  # exploration weight L on key frames (1: greedy)
    nonkey_weight: float = 0.2  # ... and on other frames
    beta: float = 1.0  # confidence width multiplier
    lam: float = 1.0  # ridge prior
    prior_rel_noise: float = 0.2  # relative delay noise assumed before any is observed
    cusum_drift: float = 0.5  # change detector: slack per observation (noise widths)
    cusum_threshold: float = 8.0  # ... and alarm level
    noise_halflife: float = 50.0  # observations over which the noise estimate halves its memory
    probe_min: int = 10  # frames between probes while device-only wins, at least ...
    probe_max: int = 128  # ... and at most
    change_prior_frames: float = 1000.0  # how much of the old model a change keeps, in frames
    intercept_scale: float = 0.1  # feature scale of the intercepts (a tight prior on RTT and overhead)
    resume_weight: float = 0.25  # what a restored observation counts against a fresh one
    stale_after: int = 100  # frames after which an observation gets a re-check bonus
    stale_rate: float = 0.1  # that bonus per horizon, as a share of the best estimate
    switch_margin: float = 0.03  # hysteresis: a split must be this much better to take over

    def __post_init__(self) -> None:
        if not (0 <= self.nonkey_weight <= 1 and 0 <= self.key_weight <= 1):
            raise ValueError("frame weights must lie in [0, 1]")
        if not 1 <= self.probe_min <= self.probe_max:
            raise ValueError("need 1 <= probe_min <= probe_max")
        if not 0 < self.resume_weight <= 1:
            raise ValueError("need 0 < resume_weight <= 1")
        if self.stale_after < 1 or self.stale_rate < 0:
            raise ValueError("need stale_after >= 1 and stale_rate >= 0")
        if min(self.beta, self.lam, self.prior_rel_noise, self.cusum_threshold, self.noise_halflife,
               self.change_prior_frames, self.intercept_scale) <= 0 or self.cusum_drift < 0 or self.switch_margin < 0:
            raise ValueError("widths, priors, thresholds and half-lives must be positive")


class ComponentModel:
    """One part of the offloading delay: its slot in the ridge bank, its noise level, and a
    change detector.

    Delay noise is multiplicative (a 10% jitter on 200 ms is not one on 5 ms), so
    residuals are taken as log ratios of observed to predicted delay and standardised by the
    noise observed so far; a change detector (``change.py``) watches those scores. On the log
    scale a link 20x faster is as plain as one 20x slower (a relative residual cannot go
    below -1: at 30% noise good news would never score beyond about three widths).
    """

    FLOOR_S = 1e-3  # delays below this are treated as this, so log ratios stay defined
    # A noise width is at least this much (s): on a shared CPU a part of a few milliseconds moves
    # by a millisecond for stretches of frames (scheduling, caches), which is no change worth a
    # re-fit, and it changes no decision.
    JITTER_S = 1e-3
    WARMUP = 3  # observations before change detection starts
    RECENT = 16  # observations kept to re-fit from after a change
    GUESS_LIFE = 64  # frames over which the observations behind a guessed change may settle it
    # Observations after which a part is settled (or where data pins the arm down): a far-off one is
    # then news or an outlier, not misfit of a young model, and it takes a confirmed change to re-fit.
    SETTLED = 8

    def __init__(self, bank: ArmRidge, index: int, config: AnsConfig, signed_intercept: bool = False) -> None:
        """``signed_intercept``: a re-fit over splits of both kinds (``_refit``) may set a negative
        intercept. A token bucket passes its burst at once, so past the burst a request pays for
        its bits beyond it: a line with a negative intercept, which the network's is then. A guess
        (one kind of split) never sets one: observations at one split spread over a drift fake it."""
        self.bank, self.i = bank, index
        self.intercept_floor = -math.inf if signed_intercept else 0.0
        self.z = bank.arms[index]
        self.prior_widths = np.linalg.norm(self.z, axis=1) / math.sqrt(bank.lam)
        self.detector = ChangeDetector(config.cusum_drift, config.cusum_threshold)
        self.decay = 0.5 ** (1.0 / config.noise_halflife)
        self.rel_var = config.prior_rel_noise**2  # EWMA of squared relative residuals
        self.level = self.FLOOR_S  # EWMA of observed delays (s), the scale of this component
        self.recent: list[tuple[int, float, float]] = []  # (split, y, score) since the CUSUM last stood at zero
        self.change_obs: list[tuple[int, float]] = []  # what the last change was fitted to, and since
        self.guessed = False  # the last change was seen at one kind of split only: which kind of change is a guess
        self.changed_at = 0  # the frame of the last change
        self.resets = 0
        self.seen = 0  # observations ever assessed: a re-fit part is young again in its fit, not its noise

    @property
    def pred(self) -> np.ndarray:
        return self.bank.mean[self.i]

    @property
    def rel_noise(self) -> float:
        return math.sqrt(self.rel_var)

    def width_scale(self) -> float:
        """Seconds per unit of ‖z‖_A⁻¹: relative noise x typical observed delay. The typical
        delay, not the arm's own estimate: an arm estimated to be slow must not look more
        promising the slower it is estimated to be."""
        return self.rel_noise * self.level

    def pinned(self, split: int) -> bool:
        """Whether data, more than the prior, now sets this arm's estimate."""
        return bool(self.bank.width[self.i, split] < 0.5 * self.prior_widths[split])

    def assess(self, split: int, y: float, t: int) -> tuple[Verdict, float | None]:
        """Weigh one observation made at frame ``t``: (OK or SUSPECT, the value to fit), or
        (CHANGED, None) when it revealed a change, in which case this part has already been
        re-fitted."""
        pred = float(self.bank.mean[self.i, split])
        level = max(pred, self.FLOOR_S)
        width = float(self.bank.width[self.i, split])
        noise = self.rel_noise * math.sqrt(1.0 + width * width)
        residual = math.log(max(y, self.FLOOR_S) / level)
        score = residual / max(noise, math.log1p(self.JITTER_S / level))
        # Settled: enough observations since the last re-fit, or data pin the arm down. A far-off
        # observation just after a re-fit is no less likely an outlier than before it, though: the
        # change detector asks for a second one once the part has seen enough observations ever.
        settled = self.bank.n[self.i] >= self.SETTLED or self.pinned(split)
        detector = self.detector
        alarm = detector.step(score, settled, self.seen >= self.SETTLED) if self.bank.n[self.i] >= self.WARMUP else 0.0
        self.seen += 1
        if detector.idle:
            self.recent.clear()
        else:
            self.recent = self.recent[-(self.RECENT - 1):] + [(split, y, score)]
        if self.guessed and t - self.changed_at > self.GUESS_LIFE:
            # What the guess was fitted to is too old to be fitted together with what is seen now
            # (the conditions may have moved again meanwhile, as when a device-only stretch ends).
            self.guessed, self.change_obs = False, []
        if self.guessed:  # each observation after a guessed change may settle what it was
            obs = self.change_obs + [(split, y)]
            if self._refit(obs, t, joint_only=True):
                detector.reset()
                self.recent = []
                return CHANGED, None
            self.change_obs = obs[-self.RECENT:]
            self.guessed = len(obs) <= self.RECENT
        if alarm:
            self._restart(alarm, t)
            return CHANGED, None
        self.level = max(self.decay * self.level + (1.0 - self.decay) * y, self.FLOOR_S)
        target = y
        if settled:
            # Only once the part is settled is the residual noise rather than misfit; then,
            # Huber-style, a lone spike moves the fit no more than three noise widths.
            clipped = min(max(residual, -3.0 * noise), 3.0 * noise)
            self.rel_var = self.decay * self.rel_var + (1.0 - self.decay) * clipped * clipped
            target = level * math.exp(clipped)
        surprising = abs(score) > 3.0 or detector.halfway
        return (SUSPECT if surprising else OK), target

    def _restart(self, side: float, t: int) -> None:
        """A change: re-fit from the observations that revealed it, with the old model,
        adjusted to them, as the prior for what they do not tell (``_refit``). Of the
        observations since the CUSUM left zero, those that did not themselves point the alarm's
        way are taken to predate the change and left out: by three noise widths if the one that
        raised the alarm did (a large change), else by one. A far-off observation before a
        smaller lasting change is then one of many, not its measure: re-fitted to the far-off
        ones alone, one 26 ms frame among 8-12 ms ones priced a link 5x slower, not 2x."""
        far = 3.0 if self.recent[-1][2] * side > 3.0 else 1.0  # the last: the alarm's own observation
        recent = ([(s, v) for s, v, score in self.recent if score * side > far]
                  or [(s, v) for s, v, _ in self.recent])
        if self.guessed:  # the last change's own evidence is still what there is
            recent = self.change_obs + recent
        self._refit(recent[-self.RECENT:], t)
        self.detector.reset()
        self.recent = []
        self.resets += 1

    def _refit(self, obs: list[tuple[int, float]], t: int, joint_only: bool = False) -> bool:
        """Re-fit this part from ``obs`` (all after the change), the old model adjusted to them
        as the prior; False (and nothing done) if ``joint_only`` and they cannot tell the two
        kinds of change apart.

        Two kinds of change move a part: its intercept (RTT, fixed overhead) or its scale (the
        bandwidth's price per bit, the load's per MAC). Observations at splits that weigh the
        two differently tell them apart: then both are fitted. Observations at one kind of
        split cannot: the change is put on the part that dominates their delay, and marked as
        a guess, to be fitted again over both kinds at the first observation of the other kind
        (a wrong guess is corrected at once, instead of compounding)."""
        splits = np.array([s for s, _ in obs])
        seen = np.array([v for _, v in obs])
        # Every feature adds delay, so no coefficient is negative; the ridge fit may say
        # otherwise on sparse data, the prior does not.
        prior = np.maximum(self.bank.theta[self.i, :, 0], 0.0)
        intercept = self.z[splits, 0]
        rest = self.z[splits, 1:] @ prior[1:]
        fitted = self._fit_intercept_and_scale(intercept, rest, seen, self.intercept_floor)
        if fitted is not None:
            prior[0], scale = fitted
            prior[1:] *= scale
        elif joint_only:
            return False
        else:
            expected = float(np.mean(intercept * prior[0] + rest))
            mean_rest, mean_icpt, mean_seen = float(np.mean(rest)), float(np.mean(intercept)), float(np.mean(seen))
            if mean_rest > 0.5 * expected and mean_seen > mean_icpt * prior[0]:
                prior[1:] *= (mean_seen - mean_icpt * prior[0]) / mean_rest
            elif mean_icpt > 0.0:
                prior[0] = max(prior[0] + (mean_seen - expected) / mean_icpt, 0.0)
        self.bank.reset(self.i, prior)
        mine = slice(self.i, self.i + 1)
        for s, v in obs:
            self.bank.update(s, [v], mine)
        self.guessed = fitted is None
        self.change_obs, self.changed_at = list(obs), t
        return True

    @staticmethod
    def _fit_intercept_and_scale(intercept: np.ndarray, rest: np.ndarray, seen: np.ndarray, floor: float = 0.0):
        """(intercept coefficient, scale of the rest) that best explain ``seen`` in relative terms,
        the scale non-negative, the intercept at least ``floor``; None when the observations cannot
        tell them apart (one kind of split)."""
        if intercept.min() <= 0 or rest.min() <= 0:
            return None
        ratio = rest / intercept  # how the two columns weigh at each observed split
        if ratio.max() < 2.0 * ratio.min():
            return None
        w = 1.0 / np.maximum(seen, ComponentModel.FLOOR_S)
        a = np.stack([intercept, rest], axis=1) * w[:, None]
        coef, *_ = np.linalg.lstsq(a, seen * w, rcond=None)
        if coef[1] >= 0.0 and coef[0] >= floor:
            return float(coef[0]), float(coef[1])
        if coef[0] < floor:  # the scale alone
            return 0.0, max(float(np.dot(a[:, 1], seen * w) / max(np.dot(a[:, 1], a[:, 1]), 1e-18)), 0.0)
        return max(float(np.dot(a[:, 0], seen * w) / np.dot(a[:, 0], a[:, 0])), 0.0), 0.0

    def state(self) -> dict:
        return {"ridge": self.bank.state(self.i), "rel_var": self.rel_var, "level": self.level}

    def load_state(self, state: dict) -> None:
        rel_var = float(state["rel_var"])
        if not 0.0 < rel_var < math.inf:
            raise ValueError(f"relative noise variance must be positive and finite, got {rel_var}")
        level = float(state["level"])
        if not 0.0 < level < math.inf:
            raise ValueError(f"delay level must be positive and finite, got {level}")
        self.bank.load_state(self.i, state["ridge"])
        self.rel_var, self.level = rel_var, level
        self.detector.reset()
        self.recent = []
        self.change_obs, self.guessed = [], False


class ANS(Policy):
    """Lower-confidence split selection on decomposed, change-aware delay models."""

    name = "ans"
    stateful = True
    TELLS = 2.0  # a look at a split estimated this many times what it once delivered tells plainly
    LOOK_EVERY = 4  # frames between the questions whether a look is due (its price is a few µs)

    def __init__(self, profile: SplitProfile, config: AnsConfig | None = None, *, seed: int | None = None) -> None:
        super().__init__(profile)
        self.config = c = config or AnsConfig()
        x = profile.contexts
        self.offload = np.arange(profile.n_splits) != profile.device_only
        # The intercept (RTT, fixed edge overhead) gets a small feature scale, i.e. a tight
        # prior: delay not yet explained is put on bits and MACs first, which is what a
        # bandwidth or load change moves.
        on = c.intercept_scale * self.offload.astype(np.float64)[:, None]
        # Each feature is divided by its mean over the offloading splits, so a typical split's
        # features are about 1 and the ridge prior (λ) weighs the same on any model.
        scale = np.where(x[self.offload].mean(axis=0) > 0, x[self.offload].mean(axis=0), 1.0)
        compute = np.delete(x / scale, BITS_COLUMN, axis=1)
        # One bank, two models: network [intercept, bits] (zero-padded) and edge [intercept, MACs, layers].
        arms = np.zeros((2, profile.n_splits, 1 + compute.shape[1]))
        arms[0, :, :2] = np.hstack([on, x[:, [BITS_COLUMN]] / scale[BITS_COLUMN]])
        arms[1] = np.hstack([on, compute])
        self.bank = ArmRidge(arms, c.lam)
        self.net = ComponentModel(self.bank, 0, c, signed_intercept=True)
        self.edge = ComponentModel(self.bank, 1, c)
        self.prober = Prober(c.probe_min, c.probe_max, c.change_prior_frames)
        self.censoring = Censoring(profile.n_splits, c.probe_max)
        self.stale = Staleness(profile.n_splits, c.stale_after, c.stale_rate)
        self.load = LoadPrice(seed)
        self._current = profile.device_only  # the split last chosen on its merits (not a probe)
        self._refresh()

    def _refresh(self) -> None:
        """Offloading estimate and width per split, recomputed only when the models change."""
        # Device-only has all-zero features, so its offloading estimate and width are 0. Below a
        # token bucket's burst the network line (negative intercept) says less than nothing: nothing.
        self._offload_s = np.maximum(self.bank.mean[0], 0.0) + self.bank.mean[1] + self.load.wait_s * self.offload
        width = self.bank.width
        self._width_s = np.hypot(self.config.beta * self.net.width_scale() * width[0],
                                 self.config.beta * self.edge.width_scale() * width[1])

    def estimate(self) -> np.ndarray:
        """Expected total delay of every split under the current models, and at least what a
        recent missed deadline said."""
        return self.front_delay_s + self.censoring.floor(self.t, self._offload_s)

    def indices(self, key_frame: bool) -> np.ndarray:
        """Lower-confidence total delay of every split (the plain estimate on key frames)."""
        return self._indices(key_frame)[0]

    def _indices(self, key_frame: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The indices, the same without the stale bonus (what a split is worth on what is known of
        it), and the plain estimates."""
        weight = self.config.key_weight if key_frame else self.config.nonkey_weight
        estimate = self.estimate()
        if weight >= 1.0:
            return estimate, estimate, estimate
        merit = estimate - math.sqrt(1.0 - weight) * self._width_s
        return merit - self.stale.bonus(self.t, estimate, self._current), merit, estimate

    def _choose(self, key_frame: bool) -> int:
        self.load.frame()
        index, merit, estimate = self._indices(key_frame)
        split = int(np.argmin(index))
        # Hysteresis: a split within ``switch_margin`` of the best stays. Near-ties otherwise flip
        # with every wobble of the estimates, and in a fleet every flip moves load between the
        # edge and the device (and other devices answer it).
        if index[self._current] <= index[split] + self.config.switch_margin * abs(index[split]):
            split = self._current
        # A split that wins by its stale bonus alone is re-checked for a frame; it takes over only
        # once what it shows beats the current one (else the margin would keep a slower split).
        if merit[split] < merit[self._current]:
            self._current = split
        if self.offload[split]:
            self.prober.offloaded()
            return split if key_frame else self._recall(split, estimate)
        self.prober.waited()
        if key_frame:
            return self._device_only()
        probe = self.prober.next(self.t, lambda: int(np.argmin(np.where(self.offload, index, np.inf))),
                                 self._probe_costs)
        return probe if probe is not None else self._device_only()

    def _recall(self, split: int, estimate: np.ndarray) -> int:
        """``split``, or for this frame a look for the conditions under which a split once delivered
        best, while ``split`` is estimated much slower than that: what made that split dear may be
        gone, and ``split``'s own requests may not show it (a small request passes a token bucket's
        burst at line rate whatever the rate). As often as looking pays (``Prober.every``): a look
        costs c, what the split looked at (``_look``) is estimated to take more than ``split``; not
        looking costs G per frame once it is back, what ``split`` is estimated to take more than
        that split once delivered. ρ is the prior rate of changes alone: the learner's own count
        runs high exactly when its models cannot fit what it sees."""
        best, self.stale.confirm = self.stale.confirm, None
        if best is not None and best != split:
            self.stale.recalled(self.t, best)
            return best
        if self.t % self.LOOK_EVERY:  # a look is due every ``probe_min`` frames at most: asked now and then
            return split
        best = int(np.argmin(np.where(self.offload, self.stale.best_s, math.inf)))
        if best == split or not math.isfinite(self.stale.best_s[best]):
            return split
        gain = float(estimate[split] - self.stale.best_s[best])
        if gain <= self.config.switch_margin * float(estimate[split]):
            return split
        look, back_s = self._look(split, best, estimate)
        cost = float(estimate[look] - estimate[split])
        since = min(self.stale.since_seen(self.t, best), self.stale.since_seen(self.t, look))
        if since < self.prober.every(self.t, cost, gain, 0):
            return split
        # An answer nearer (in ratio) what the look would take with those conditions back than what
        # it is estimated to take now asks for another look at once.
        self.stale.recalled(self.t, look, math.sqrt(float(estimate[look]) * back_s))
        return look

    def _look(self, split: int, best: int, estimate: np.ndarray) -> tuple[int, float]:
        """Where to look for the conditions under which ``best`` delivered best, and what the look
        would take with them back: at ``best``, or at a split that would show them as plainly for
        less. Where the link's price per bit explains what ``best`` is estimated to take more than
        it delivered, a split whose estimate would fall to 1/TELLS or less at that price tells as
        plainly as ``best``: after a drop to 4 Mbit/s, a 32 kB cut (0.12 s) shows the link back as
        well as the 192 kB input (0.41 s). The split in use, and any estimated faster, show
        nothing a look would add."""
        best_s = float(self.stale.best_s[best])
        bits_s = self.net.z[:, 1] * max(float(self.bank.theta[0, 1, 0]), 0.0)  # each split's price of its bits
        gap = float(estimate[best]) - best_s
        if not 0.0 < gap < bits_s[best]:
            return best, best_s
        back = np.maximum(estimate - bits_s * (gap / bits_s[best]), self.front_delay_s)  # at the price that was
        tells = (estimate > self.TELLS * back) & (estimate > estimate[split]) & self.offload
        tells[best] = True
        look = int(np.argmin(np.where(tells, estimate, math.inf)))
        return look, float(back[look])

    def _device_only(self) -> int:
        device_only = self.profile.device_only  # the device times every run of its own
        self.stale.observed(self.t, device_only, float(self.front_delay_s[device_only]))
        return device_only

    def _probe_costs(self, probe: int) -> tuple[float, float, float]:
        """A probe's estimated total delay, device-only's, and (while offloading never won) the
        most optimistic offloading estimate."""
        optimistic = math.nan if self.prober.good_split is not None else optimistic_offload(
            self.front_delay_s, self._offload_s, self._width_s, self.offload)
        return float(self.front_delay_s[probe] + self._offload_s[probe]), float(self.front_delay_s[-1]), optimistic

    def probe_interval(self, probe: int) -> float:
        """Frames between probes of ``probe`` while device-only wins (``Prober.interval``)."""
        return self.prober.interval(self.t, *self._probe_costs(probe))

    def update(self, feedback: Feedback) -> None:
        p = feedback.split
        if not self.offload[p]:
            return
        if feedback.censored:  # a lower bound: held, never fitted
            self.censoring.missed(self.t, p, feedback.offload_s)
            self.prober.missed(p)
            return
        self.censoring.observed(p)
        expected_s = float(self._offload_s[p])
        if feedback.edge_s is None or feedback.transfer_s is None:
            # An edge that sends no timing: attribute to it what the edge model expects.
            edge = max(float(self.edge.pred[p]), 0.0)
            transfer = max(feedback.offload_s - edge, 0.0)
        else:
            edge, transfer = feedback.edge_s, feedback.transfer_s
        # The queueing wait goes to the load price, not to the network model (transfer minus
        # wait) nor the edge model (batches of one only).
        batched = feedback.batch_size > 1 and feedback.edge_s is not None
        transfer = self.load.acknowledged(feedback.wait_s, feedback.batch_size, edge, transfer,
                                          float(self.edge.pred[p]) if batched else None)
        net_verdict, net_y = self.net.assess(p, transfer, self.t)
        edge_verdict, edge_y = (OK, None) if batched else self.edge.assess(p, edge, self.t)
        fit = [y for y in (net_y, edge_y) if y is not None]
        if len(fit) == 2:
            self.bank.update(p, fit)
        elif fit:  # the other part was re-fitted after a change, or not observed (a batch)
            i = 0 if net_y is not None else 1
            self.bank.update(p, fit, slice(i, i + 1))
        self._refresh()
        changed = net_verdict is CHANGED or edge_verdict is CHANGED
        delivered_s = float(self.front_delay_s[p]) + feedback.offload_s
        self.stale.observed(self.t, p, delivered_s, changed)
        self.prober.changes += changed
        good_news = (net_verdict is not OK or edge_verdict is not OK) and feedback.offload_s < expected_s
        self.prober.answered(p, delivered_s, float(self.front_delay_s[-1]), good_news)
        self.stale.recall_answered(self.t, p, delivered_s, changed)

    def prime_edge(self, compute_s: np.ndarray) -> bool:
        """Start the edge model from the edge's own compute table (seconds per split, NaN where
        unknown), as one observation per split, if nothing has been learnt about the edge yet:
        a device joining a fleet then only has its network to learn. False if not used."""
        compute_s = np.asarray(compute_s, dtype=np.float64)
        if self.bank.n[1] > 0 or compute_s.shape != (self.profile.n_splits,):
            return False
        known = [p for p in np.flatnonzero(self.offload) if np.isfinite(compute_s[p]) and compute_s[p] >= 0]
        if not known:
            return False
        # The table's least-squares fit is the prior (the ridge alone would shrink it towards
        # zero), and each entry then counts as one observation of its split.
        fit, *_ = np.linalg.lstsq(self.edge.z[known], compute_s[known], rcond=None)
        self.bank.reset(1, fit)
        for p in known:
            self.bank.update(p, [compute_s[p]], slice(1, 2))
        self.edge.level = max(float(np.mean(compute_s[known])), ComponentModel.FLOOR_S)
        self._refresh()
        return True

    def edge_load(self, utilisation: float, wait_s: float, service_s: float, frame_rate: float,
                  edges: int = 1) -> None:
        """An edge's load report, priced by ``LoadPrice.reported``."""
        if self.load.reported(utilisation, wait_s, service_s, frame_rate, edges):
            self._refresh()

    def edge_online(self) -> None:
        """An edge came (back) online after none was: what offloading costs may have changed
        while none was there. Re-check at once: the next frame that device-only would win
        probes the best offloading split seen, instead of waiting out the probe interval."""
        self.prober.recheck = True

    def stats(self) -> dict:
        return {
            **super().stats(),
            "probes": self.prober.probes,
            "rechecks": self.stale.rechecks,
            "recalls": self.stale.recalls,
            "edge_wait_ms": round(self.load.wait_s * 1e3, 3),
            "changes": self.prober.changes,
            "resets": {"net": self.net.resets, "edge": self.edge.resets},
            "rel_noise": {"net": self.net.rel_noise, "edge": self.edge.rel_noise},
        }

    # -- persistence: resume after a restart, or start from another device's experience --

    def state(self) -> dict:
        """Everything learnt, as plain JSON-able data. Front-end delays are not included:
        they belong to this device, while network and edge models transfer between devices."""
        return {**state_header(self), "net": self.net.state(), "edge": self.edge.state()}

    def load_state(self, state: dict, weight: float | None = None) -> None:
        """Resume from ``state()`` output, this device's or another's on the same model. Each
        saved observation counts ``weight`` (default ``resume_weight``) of a fresh one."""
        check_header(self, state)
        try:
            self.net.load_state(state["net"])
            self.edge.load_state(state["edge"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"learner state is malformed: {exc}") from None
        # A saved state is a prior, not the truth: the edge, the network or the load may have
        # changed since, so a few fresh observations outweigh a stale belief.
        self.weaken(self.config.resume_weight if weight is None else weight)

    def weaken(self, weight: float) -> bool:
        """Keep what is believed, but let every observation behind it count only ``weight`` (0, 1]
        of a fresh one: for a state restored after a restart, or learnt under another edge or
        network, which is a weak prior rather than the truth."""
        if not 0 < weight <= 1:
            raise ValueError(f"need 0 < weight <= 1, got {weight}")
        self.bank.soften(1.0 / weight)
        self._refresh()
        return True
