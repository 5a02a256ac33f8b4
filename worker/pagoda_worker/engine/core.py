"""The engine core: token ids in, token ids out. Add requests, call step() in a loop, read
each step's new tokens.

Only the thread that calls step() touches the model. Everything about *which* tokens run lives
in the scheduler; this class wires loading, scheduling, running and sampling. What it settles
before the first step is startup.py's (device, context length, EOS ids), rank_setup.py's (the
model, and the runner with its KV cache, the same on every tensor-parallel rank) and
kv_cache_sizing.py's (how many KV blocks); turning a step into tensors is model_runner.py's.
It ends a sequence at EOS, a stop token id or max_tokens; text (detokenizing, stop strings) is
the front end's (output_processor.py), which tells the core through `finish_seq` when a stop
string ended one. Under tensor parallelism the core is rank 0: it sends each step to the other
ranks (followers.py).
In the server the core runs in a process of its own (core_process.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace

import torch

from pagoda_worker.engine.block_manager import BlockManager
from pagoda_worker.engine.config import EngineConfig
from pagoda_worker.engine.errors import InvalidRequest, check_context_length
from pagoda_worker.engine.grammar import Grammars
from pagoda_worker.engine.loop_timing import Laps
from pagoda_worker.engine.messages import CoreOutput, EngineStats, SeqDelta
from pagoda_worker.engine.model_runner import StepInputs
from pagoda_worker.engine.outputs import FinishReason, TokenLogprob
from pagoda_worker.engine.rank_setup import build_runner, load_rank
from pagoda_worker.engine.sampler import (
    Sampler,
    SamplingRow,
    TokenMask,
    make_generator,
    token_logprobs,
)
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.engine.scheduler import ScheduledSeq, Scheduler
from pagoda_worker.engine.sequence import Request, Sequence
from pagoda_worker.engine.startup import eos_token_ids, rank_device
from pagoda_worker.engine.stop_checker import StopChecker
from pagoda_worker.engine.unread_tokens import SampledOnHost, UnreadStep
from pagoda_worker.models.source import resolve_model
from pagoda_worker.models.tokenizer import tokenizer_for
from pagoda_worker.parallel.followers import Followers
from pagoda_worker.parallel.group import SINGLE

log = logging.getLogger(__name__)


class EngineCore:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        source = resolve_model(config.model)
        model_dir = source.folder
        self.model_name = source.name
        self.model_folder = model_dir
        self.device = rank_device(config.device, 0, config.tensor_parallel_size)
        self.followers: Followers | None = None  # the other tensor-parallel ranks
        tp = SINGLE
        try:
            if config.tensor_parallel_size > 1:
                self.followers = Followers(replace(config, model=str(model_dir)), self.device)
                tp = self.followers.tp
            loaded = load_rank(config, model_dir, self.device, tp)
            if self.followers is not None:
                self.followers.wait_loaded()
            self.runner = build_runner(config, loaded)
        except BaseException:
            self.close()
            raise
        self.model, self.hf_config = loaded.model, loaded.hf_config
        self.dtype, self.quantization = loaded.dtype, loaded.quantization
        self.max_model_len = loaded.max_model_len
        self.tokenizer = tokenizer_for(model_dir, config.load_format)
        self.eos_token_ids = eos_token_ids(self.hf_config, model_dir, self.tokenizer)

        num_blocks = self.runner.kv_caches[0].shape[1]
        self.block_manager = BlockManager(num_blocks, config.block_size)
        self.scheduler = Scheduler(
            self.block_manager, config.max_num_seqs, config.max_num_batched_tokens
        )
        self.sampler = Sampler(torch.Generator(self.device).manual_seed(config.seed))
        self.grammars = None  # structured outputs need a tokenizer to map grammar to tokens
        if self.tokenizer is not None:
            vocab = self.model.shape.vocab_size
            self.grammars = Grammars(self.tokenizer, vocab, self.eos_token_ids)
        self.requests: dict[str, Request] = {}
        self._token_stops: dict[Request, StopChecker] = {}  # EOS, stop token ids, max_tokens
        self._unread: UnreadStep | None = None  # the last step, if its tokens are unread
        log.info(
            "engine ready: %s on %s%s (%s%s), KV cache %d blocks x %d tokens = %d tokens (%s)",
            self.model_name, self.device,
            f" and {tp.size - 1} more tensor-parallel ranks" if tp.size > 1 else "",
            self.dtype, ", fp8 weights" if self.quantization == "fp8" else "", num_blocks,
            config.block_size, self.kv_capacity_tokens, loaded.kv_dtype,
        )  # fmt: skip

    def check_ranks(self) -> None:
        """Raises RankLost once another tensor-parallel rank has died, even while idle."""
        if self.followers is not None:
            self.followers.check()

    def close(self) -> None:
        """Stop the other tensor-parallel ranks, if any (the engine takes no steps after)."""
        if self.followers is not None:
            self.followers.stop()
            self.followers = None

    @property
    def kv_capacity_tokens(self) -> int:
        return self.block_manager.num_blocks * self.config.block_size

    # -- requests -------------------------------------------------------------------------

    def add_request(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
    ) -> str:
        params.validate()
        self._check_prompt(prompt_token_ids, params)
        request_id = request_id or uuid.uuid4().hex
        if request_id in self.requests:
            raise InvalidRequest("request_id", f"{request_id!r} is already in use")
        # A prompt to score must be computed here: no blocks from other requests' prompts.
        private = not self.config.enable_prefix_caching or params.prompt_logprobs is not None
        request = Request(
            request_id=request_id,
            prompt_token_ids=list(prompt_token_ids),
            params=params,
            cache_salt=request_id.encode() if private else b"",
        )
        if params.prompt_logprobs is not None:
            request.prompt_logprobs = [None] * len(prompt_token_ids)
        for index in range(params.num_seqs):
            generator = None
            if params.seed is not None:
                generator = make_generator(params.seed, index, self.device)
            seq = Sequence(request, index, list(prompt_token_ids), generator)
            if params.structured_output is not None:
                assert self.grammars is not None  # else _check_prompt refused the request
                seq.matcher = self.grammars.matcher(params.structured_output)
            request.seqs.append(seq)
            self.scheduler.add(seq)
        self._token_stops[request] = StopChecker(params, self.eos_token_ids)
        self.requests[request_id] = request
        return request_id

    def _check_prompt(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        if params.stop and self.tokenizer is None:
            raise InvalidRequest("stop", "stop strings need a tokenizer; this model has none")
        if params.structured_output is not None:
            if self.grammars is None:
                raise InvalidRequest("structured_output", "needs a tokenizer; this model has none")
            self.grammars.matcher(params.structured_output)  # compiles it, or says why not
        if not prompt_token_ids:
            raise InvalidRequest("prompt", "must contain at least one token")
        vocab = self.model.shape.vocab_size
        if any(not 0 <= t < vocab for t in prompt_token_ids):
            raise InvalidRequest("prompt", f"token ids must be in [0, {vocab})")
        if any(t >= vocab for t in params.logit_bias):
            raise InvalidRequest("logit_bias", f"token ids must be in [0, {vocab})")
        check_context_length(len(prompt_token_ids), params.max_tokens, self.max_model_len)
        total = len(prompt_token_ids) + params.max_tokens
        if total > self.kv_capacity_tokens:
            raise InvalidRequest(
                "max_tokens",
                f"{total} tokens do not fit the KV cache ({self.kv_capacity_tokens} tokens)",
            )

    def abort_request(self, request_id: str) -> None:
        """Stop the request and free its blocks; nothing more is reported about it."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return
        for seq in request.seqs:
            if not seq.is_finished:
                self._finish(seq, FinishReason.ABORT)
        self._forget(request)

    def finish_seq(self, request_id: str, index: int) -> None:
        """The front end found a stop string in completion `index`: stop computing it."""
        request = self.requests.get(request_id)
        if request is None or request.seqs[index].is_finished:
            return
        self._finish(request.seqs[index], FinishReason.STOP)
        if request.is_finished:
            del self.requests[request_id]
            self._forget(request)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests) or self._unread is not None

    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=self.scheduler.num_waiting,
            kv_cache_usage=bm.usage,
            num_gpu_blocks=bm.num_blocks,
            num_free_blocks=bm.num_free_blocks,
            kv_capacity_tokens=self.kv_capacity_tokens,
            prefix_cache_queries=bm.prefix_queries,
            prefix_cache_hits=bm.prefix_hits,
            num_preemptions=self.scheduler.num_preemptions,
        )

    # -- the step -------------------------------------------------------------------------

    def step(self, laps: Laps | None = None) -> list[CoreOutput]:
        """Launch the next step, then read the unread tokens of the one before (async
        scheduling, unread_tokens.py): the device has work queued while the host detokenizes,
        checks stops and schedules. Without async scheduling each step is read right after its
        launch. A step with grammar-constrained rows samples after that read instead, once their
        matchers know the tokens before: its forward pass still runs while the host reads.
        `laps` times the parts."""
        laps = laps or Laps()
        deltas: dict[Sequence, SeqDelta] = {}
        touched: list[Request] = []
        previous = self._unread
        launched = self._launch(previous, laps)
        constrained = launched is not None and launched.constrained and previous is not None
        self._unread = None
        if launched is not None and not constrained:
            self._unread = self._sample(launched, previous)
        if previous is not None:
            touched += self._read(previous, deltas)
        if launched is not None and constrained:
            self._unread = self._sample(launched, None)
        if self._unread is not None and not self.config.async_scheduling:
            touched += self._read(self._unread, deltas)
            self._unread = None
        laps.lap("resolve")  # the metrics' name for reading the unread tokens

        outputs = []
        for request in dict.fromkeys(touched):
            news = [deltas[s] for s in request.seqs if s in deltas]
            if news:
                outputs.append(self._core_output(request, news))
            if request.is_finished:
                self.requests.pop(request.request_id, None)
                self._forget(request)
        laps.lap("outputs")
        return outputs

    def _launch(self, previous: UnreadStep | None, laps: Laps) -> Launched | None:
        """Schedule a step and start its forward pass; its inputs may include `previous`'s
        unread tokens."""
        plan = self.scheduler.schedule()
        laps.lap("schedule")
        if not plan.scheduled:
            return None
        now = time.time()
        unread_rows = previous.rows if previous else {}
        unread_ids = previous.token_ids if previous else None
        inputs = self.runner.prepare(plan.scheduled, unread_rows)
        if self.followers is not None:
            self.followers.send(inputs.arrays)
        logits, hidden = self.runner.execute(inputs, unread_ids)
        if inputs.prompt_spans:
            self._score_prompts(inputs, hidden)
        for item in plan.scheduled:
            item.seq.num_computed_tokens += item.num_new_tokens
            self.block_manager.commit(item.seq)
            request = item.seq.request
            request.scheduled_time = request.scheduled_time or now
        laps.lap("launch")
        return Launched(plan.scheduled, [item.seq for item in inputs.sampled], logits)

    def _sample(self, launched: Launched, previous: UnreadStep | None) -> UnreadStep:
        """Sample the launched step's tokens; `previous`: the step before, if still unread."""
        seqs = launched.seqs
        result = None
        if seqs:
            unread_rows = previous.rows if previous else {}
            rows = [self._sampling_row(seq, unread_rows) for seq in seqs]
            unread_ids = previous.token_ids if previous else None
            mask = self._token_mask(seqs, launched.logits.device)
            result = self.sampler(launched.logits, rows, unread_ids, mask)
        return UnreadStep(launched.scheduled, seqs, result)

    def _token_mask(self, seqs: list[Sequence], device: torch.device) -> TokenMask | None:
        """What the grammars of the constrained rows allow next (their matchers are current)."""
        matchers = {
            row: seq.matcher
            for row, seq in enumerate(seqs)
            if seq.matcher is not None and not seq.is_finished
        }
        if not matchers:
            return None
        assert self.grammars is not None  # only they give sequences matchers
        bits = self.grammars.masks(list(matchers.values()))
        rows = torch.tensor(list(matchers), dtype=torch.int64)
        rows_on_device = rows.to(device, non_blocking=True)
        return TokenMask(rows_on_device, bits.to(device, non_blocking=True))

    @torch.inference_mode()
    def _score_prompts(self, inputs: StepInputs, hidden: torch.Tensor) -> None:
        """prompt_logprobs: score the prompt tokens this step computed, a chunk of rows at a
        time. Reads the scores at once: a device sync, only in steps that score prompts."""
        spans = inputs.prompt_spans
        targets = [
            t for s in spans for t in s.request.prompt_token_ids[s.first : s.first + s.count]
        ]
        target_ids = torch.tensor(targets, dtype=torch.int64).to(hidden.device)
        k = max(s.request.params.prompt_logprobs or 0 for s in spans)  # set: they score
        scored: list[tuple[int, float, list[int], list[float]]] = []
        at = 0
        for logits in self.runner.prompt_logits(inputs, hidden):
            rows = logits.shape[0]
            chosen, top_ids, top_lps = token_logprobs(logits, target_ids[at : at + rows], k)
            columns = (chosen.tolist(), top_ids.tolist(), top_lps.tolist())
            scored += zip(targets[at : at + rows], *columns, strict=True)
            at += rows
        entries = iter(scored)
        for span in spans:
            wanted = span.request.params.prompt_logprobs
            scores = span.request.prompt_logprobs
            assert scores is not None  # spans are of requests that score their prompt
            for position in range(span.first, span.first + span.count):
                token, logprob, ids, lps = next(entries)
                top = dict(zip(ids[:wanted], lps[:wanted], strict=True))
                scores[position] = TokenLogprob(token, logprob, top)

    def _read(self, step: UnreadStep, deltas: dict[Sequence, SeqDelta]) -> list[Request]:
        """Read a launched step's unread tokens into its sequences; returns the requests it
        touched. A sequence that finished meanwhile (aborted, or ended by the step before) gets
        nothing."""
        sampled = step.wait()
        live = [item.seq for item in step.scheduled if not item.seq.is_finished]
        for row, seq in enumerate(step.seqs):
            if not seq.is_finished:
                self._append_token(seq, row, sampled, deltas)
        for seq in live:
            if not seq.is_finished:
                self.block_manager.commit(seq)  # blocks that held unread tokens
        return [seq.request for seq in live]

    def _sampling_row(self, seq: Sequence, unread_rows: dict[Sequence, int]) -> SamplingRow:
        return SamplingRow(
            params=seq.params,
            prompt_token_ids=seq.request.prompt_token_ids,
            output_token_ids=seq.output_token_ids,
            generator=seq.generator,
            unread_row=unread_rows[seq] if seq.num_unread else None,
        )

    def _append_token(
        self,
        seq: Sequence,
        row: int,
        sampled: SampledOnHost,
        deltas: dict[Sequence, SeqDelta],
    ) -> None:
        token = sampled.token_ids[row]
        delta = deltas.get(seq)
        if delta is None:
            delta = deltas[seq] = SeqDelta(seq.index, [])
        seq.read_token(token)
        delta.token_ids.append(token)
        if sampled.logprobs is not None and seq.params.needs_logprob:
            delta.logprobs = delta.logprobs or []
            delta.logprobs.append(sampled.logprobs[row])
        wanted, top_ids, top_lps = seq.params.logprobs, sampled.top_ids, sampled.top_logprobs
        if wanted is not None and top_ids is not None and top_lps is not None:
            delta.top = delta.top or []
            delta.top.append(dict(zip(top_ids[row][:wanted], top_lps[row][:wanted], strict=True)))
        # add_request keeps prompt + max_tokens within the context window, so max_tokens is
        # the only length limit left to check.
        reason = self._token_stops[seq.request].check_token(token, len(seq.output_token_ids))
        if seq.matcher is not None and _grammar_ends(seq.matcher, token):
            reason = FinishReason.STOP  # the structure is complete (even at max_tokens)
        if reason is not None:
            self._finish(seq, reason)
            delta.finish_reason = reason

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        seq.finish_reason = reason
        seq.drop_unread()
        self.scheduler.remove(seq)

    def _core_output(self, request: Request, news: list[SeqDelta]) -> CoreOutput:
        """The request's news; its first output also says what is fixed by then."""
        if request.reported:
            return CoreOutput(request.request_id, news)
        request.reported = True
        return CoreOutput(
            request.request_id,
            news,
            num_cached_tokens=request.seqs[0].num_cached_tokens,
            scheduled_time=request.scheduled_time,
            prompt_logprobs=request.prompt_logprobs,
        )

    def _forget(self, request: Request) -> None:
        del self._token_stops[request]


@dataclass
class Launched:
    """A step whose forward pass is queued on the device and whose tokens are not sampled yet."""

    scheduled: list[ScheduledSeq]
    seqs: list[Sequence]  # the sequences that sample, in the order of the logits' rows
    logits: torch.Tensor

    @property
    def constrained(self) -> bool:
        return any(seq.matcher is not None for seq in self.seqs)


def _grammar_ends(matcher, token: int) -> bool:
    """Feed the token to the sequence's grammar: whether nothing may follow it. A token the
    grammar refuses (only sampling without the mask could pick one) ends it too."""
    if not matcher.consume_token(token):
        log.warning("a constrained sequence produced a token its grammar refuses: %s",
                    matcher.get_error())  # fmt: skip
        return True
    return matcher.is_stopped()
