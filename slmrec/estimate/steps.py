"""The cost of running a step: tokens it processes (and where that figure comes from), its peak
memory, FLOP and hours on the hardware the steps run on. A mixin of `Estimator`."""

from __future__ import annotations

from slmrec.estimate.constants import (ACT_BYTES_PER_TOKEN_LAYER_HIDDEN, ADAPTER_TRAINABLE_DEFAULT,
                                       COMPUTE_EFFICIENCY, DEFAULT_STEP_TOKENS, MB,
                                       PRETRAIN_TOKENS_PER_PARAM, TOKENS_PER_UNIT,
                                       TRAIN_MICRO_TOKENS)
from slmrec.estimate.options import Option
from slmrec.estimate.state import ModelState, StepCost
from slmrec.schema import ComputeScale


class StepCosts:
    """Step cost arithmetic; expects `kb`, `arch`, `teacher`, `data_tokens`, `chw` peaks."""

    def step_tokens(self, opt: Option) -> float:
        return self.step_amount(opt)[0]

    def step_amount(self, opt: Option) -> tuple[float, str]:
        """Tokens the step processes, and where that figure comes from. The scenario's amount
        for the method's data tier wins when it is smaller than what the method would use."""
        m = self.kb.methods[opt.method]
        tier = m.requires.data.value
        have = self.data_tokens.get(tier)
        amount = m.requires.data_amount
        if opt.cost["tokens"]:
            need, why = opt.cost["tokens"], "the method's cost.tokens"
        elif amount is not None:
            need = amount.count * TOKENS_PER_UNIT[amount.unit]
            why = f"the method's {amount.count:g} {amount.unit}"
        else:
            scale = m.requires.compute
            if scale is ComputeScale.pretraining:
                return PRETRAIN_TOKENS_PER_PARAM * self.arch.params, \
                    "pre-training budget (20 tokens per parameter)"
            if opt.cost["passes"] == "none":
                return 0.0, "no model passes"
            need, why = DEFAULT_STEP_TOKENS.get(scale, 0.0), f"default for {scale.value} compute"
        if tier == "none":
            return need, why
        if have:
            if have < need:
                return have, f"the scenario's {tier} data ({have:,.0f} tokens; {why}: {need:,.0f})"
            return need, f"{why} ({need:,.0f} tokens; the scenario has {have:,.0f})"
        return need, f"{why} ({need:,.0f} tokens): the scenario gives no {tier} amount"

    def step_cost(self, s: ModelState, opt: Option) -> StepCost:
        c = opt.cost
        n = s.params
        tokens = self.step_tokens(opt)
        float_bytes = 2.0
        mem = n * max(s.bits, 16.0) / 8  # the step loads the model in a float format
        flops = 0.0
        if c["passes"] == "forward":
            flops = 2 * n * tokens
            mem += tokens * s.hidden * 4 * 2  # layer inputs and outputs of the calibration set
            if c["hessian"]:
                mem += max(s.hidden, s.intermediate) ** 2 * 4
        elif c["passes"] == "train":
            if c["optimizer"] == "full":
                mem = n * 16.0  # bf16 weights and gradients, fp32 master copy and Adam moments
                flops = 6 * n * tokens
            else:
                bits = c["bits_during"] or (min(s.bits, 16.0) if s.int_quant else 16.0)
                frac = c["trainable_fraction"] or ADAPTER_TRAINABLE_DEFAULT
                mem = n * bits / 8 + frac * n * 16.0
                flops = 4 * n * tokens + 6 * frac * n * tokens
            mem += (ACT_BYTES_PER_TOKEN_LAYER_HIDDEN * TRAIN_MICRO_TOKENS * s.layers * s.hidden
                    + TRAIN_MICRO_TOKENS * s.vocab * 4 * 2)
        m = self.kb.methods[opt.method]
        t = self.teacher
        if t is not None and m.requires.teacher.value != "none":
            teacher_w = t.params * float_bytes
            teacher_act = TRAIN_MICRO_TOKENS * (t.hidden * float_bytes * 4 + t.vocab * 4)
            flops += 2 * t.params * tokens
            if c["teacher_resident"]:
                mem += teacher_w + teacher_act
            else:  # the teacher generates first, then leaves memory
                mem = max(mem, teacher_w + teacher_act)
        mem_mb = mem / MB + (self.compute_overhead_mb if (c["passes"] != "none" or mem) else 0.0)
        tflop = flops / 1e12
        hours = tflop / (self.compute_peak * COMPUTE_EFFICIENCY) / 3600 if self.compute_peak else 0.0
        return StepCost(mem_mb, tflop, hours)

    # ---- full predictions with units and sources ------------------------------------------

