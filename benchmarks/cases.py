"""The benchmark cases. Each returns the records it wrote (see ``common.record``).

Every timing is the median of >= 3 repeats after an untimed warm-up (which also traces the compiled
functions), unless a record says otherwise; the load average at each repeat is in the record.
"""

from __future__ import annotations

import inspect
import os
import statistics
import time
from typing import Any

import numpy as np
import tensorflow as tf

from benchmarks import builders as B
from benchmarks.common import record, timed

# sizes: full (``make bench``) and --quick
SIZES = {
    "full": {"sample_calls": 40, "update_env_steps": 20000, "pretrain_windows": 20480, "rollout_steps": 100,
             "ref_steps": 500, "ref_epochs": 1, "small_itrs": 3, "avoid_itrs": 3, "peak_sizes": (2048, 4096),
             "can_steps": 50, "can_rounds": 4},
    "quick": {"sample_calls": 15, "update_env_steps": 5000, "pretrain_windows": 5120, "rollout_steps": 25,
              "ref_steps": 100, "ref_epochs": 1, "small_itrs": 2, "avoid_itrs": 2, "peak_sizes": (2048,),
              "can_steps": 25, "can_rounds": 3},
}

KP = 10  # fine-tuned denoising steps of the gym configs
MICRO = 500  # env steps per micro-batch in the update case (x K' = 5000 transitions, the size that fits the caches)


def _size(quick: bool) -> dict[str, Any]:
    return SIZES["quick" if quick else "full"]


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


# ---------------------------------------------------------------------------------------------------------
def case_peak(quick: bool) -> list[dict]:
    """float32 matmul rate TensorFlow reaches here: C = A @ B, square, inside one tf.function."""
    out = []
    for n in _size(quick)["peak_sizes"]:
        a = tf.random.normal((n, n))
        b = tf.random.normal((n, n))
        f = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
        reps = 5 if n <= 2048 else 3
        r = timed(lambda f=f, a=a, b=b: f(a, b).numpy(), repeats=reps, warmup=1)
        flop = 2.0 * n ** 3
        gf, gf_best = flop / r["median_s"] / 1e9, flop / r["min_s"] / 1e9
        gf_cpu = flop / r["median_cpu_s"] / 1e9
        out.append(record("peak", f"matmul {n}x{n}", {"n": n, "dtype": "float32", "repeats": reps},
                          {**r, "gflops_median": gf, "gflops_best": gf_best, "gflops_per_cpu_s": gf_cpu,
                           "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()},
                          f"{gf:.1f} GFLOP/s (median of {reps}; best {gf_best:.1f}; {gf_cpu:.1f} GFLOP per "
                          f"CPU-second)"))
    return out


# ---------------------------------------------------------------------------------------------------------
def case_sample(quick: bool) -> list[dict]:
    """Stochastic sampling with chain through PPODiffusion.act (the rollout's call)."""
    calls = _size(quick)["sample_calls"]
    rng = np.random.default_rng(0)
    out = []
    setups = [("DDPM K=20 K'=10", dict(denoising_steps=20, ft_denoising_steps=KP), (40, 50)),
              ("DDIM 5 steps (K=100, K'=5)", dict(denoising_steps=100, ft_denoising_steps=5, use_ddim=True,
                                                  ddim_steps=5), (40,)),
              ("DDPM K=20 K'=10, XLA (model.jit_compile_sampler: true)",
               dict(denoising_steps=20, ft_denoising_steps=KP, jit_compile_sampler=True), (40,))]
    for label, kw, envs in setups:
        model = B.ppo_diffusion(**kw)
        for n in envs:
            cond = {"state": tf.constant(rng.standard_normal((n, 1, 11)).astype(np.float32))}

            def go(model=model, cond=cond):
                for _ in range(calls):
                    action, chain = model.act(cond, False)
                    action.numpy(), chain.numpy()

            r = timed(go, repeats=3, warmup=1)
            per_call = r["median_s"] / calls
            flop = n * model.n_steps * B.matmul_flops_per_row(model.network)
            cpu_per_call = r["median_cpu_s"] / calls
            figs = {**r, "ms_per_call": per_call * 1e3, "calls_per_s": 1 / per_call, "gflops": flop / per_call / 1e9,
                    "cpu_ms_per_call": cpu_per_call * 1e3, "gflops_per_cpu_s": flop / cpu_per_call / 1e9,
                    "env_policy_steps_per_s": n / per_call,
                    "tracing_count": model._sample.experimental_get_tracing_count()}
            cfg = {"n_envs": n, "obs_dim": 11, "action_dim": 3, "horizon_steps": 4,
                   "net": "DiffusionMLP 3x512 ReLU res", "calls_per_repeat": calls, **kw}
            out.append(record("sample", f"{label}, {n} envs", cfg, figs,
                              f"{per_call * 1e3:.2f} ms/call = {1 / per_call:.1f} policy steps/s "
                              f"({_fmt(n / per_call)} env-policy steps/s); {flop / per_call / 1e9:.1f} GFLOP/s, "
                              f"{flop / cpu_per_call / 1e9:.1f} GFLOP per CPU-second"))
    return out


# ---------------------------------------------------------------------------------------------------------
def update_flops(model) -> dict[str, float]:
    """Matmul FLOPs per denoising transition of a PPO minibatch: actor_ft on every transition, the critic once
    per env step (K' transitions), each fwd + bwd = 3 x forward (2 * in * out per Dense kernel per row)."""
    actor = B.matmul_flops_per_row(model.actor_ft)
    critic = B.matmul_flops_per_row(model.critic)
    return {"actor_fwd_per_row": actor, "critic_fwd_per_row": critic,
            "per_transition": 3.0 * (actor + critic / model.ft_denoising_steps)}


_PROBE: list = []


def matmul_probe() -> tuple[float, float]:
    """GFLOP per wall second and per process-CPU second of three 2048x2048 float32 matmuls in a tf.function,
    right now (the in-situ peak)."""
    if not _PROBE:
        a, b = tf.random.normal((2048, 2048)), tf.random.normal((2048, 2048))
        f = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
        f(a, b).numpy()
        _PROBE.extend([f, a, b])
    f, a, b = _PROBE
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(3):
        f(a, b).numpy()
    flop = 3 * 2.0 * 2048 ** 3
    return flop / (time.perf_counter() - t0) / 1e9, flop / (time.process_time() - c0) / 1e9


def timed_vs_peak(fn, flop: float, repeats: int = 3) -> dict[str, Any]:
    """``timed`` with the matmul probe run just before each repeat: each repeat's GFLOP/s is set against the
    peak measured seconds earlier, so the fraction of peak survives the load changes of a shared machine. The
    same ratio in CPU time (GFLOP per process-CPU second, ours against the probe's) is also given: it counts
    only the cycles this process got, so it is the steadier of the two when other jobs compete for the cores."""
    return timed_vs_peak_interleaved({"": fn}, flop, repeats)[""]


def timed_vs_peak_interleaved(fns: dict[str, Any], flop: float, repeats: int = 3) -> dict[str, dict[str, Any]]:
    """``timed_vs_peak`` of several variants of the same work (``flop`` each), interleaved: every repeat runs
    probe, variant 1, probe, variant 2, ..., so all variants see the same load."""
    for fn in fns.values():
        fn()  # warm-up (traces)
    probes: dict[str, list] = {k: [] for k in fns}
    runs: dict[str, list] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            probes[k].append(matmul_probe())
            runs[k].append(timed(fn, repeats=1, warmup=0))
    out = {}
    for k in fns:
        secs = [r["seconds"][0] for r in runs[k]]
        cpus = [r["cpu_seconds"][0] for r in runs[k]]
        fracs = [flop / s / 1e9 / p[0] for s, p in zip(secs, probes[k])]
        fracs_cpu = [flop / c / 1e9 / p[1] for c, p in zip(cpus, probes[k])]
        out[k] = {"seconds": secs, "median_s": statistics.median(secs), "min_s": min(secs), "cpu_seconds": cpus,
                  "load_1min": [r["load_1min"][0] for r in runs[k]],
                  "gflops": flop / statistics.median(secs) / 1e9, "gflops_best": flop / min(secs) / 1e9,
                  "probe_peak_gflops": [round(p[0], 1) for p in probes[k]],
                  "probe_peak_gflops_per_cpu_s": [round(p[1], 1) for p in probes[k]],
                  "fraction_of_peak_each": [round(f, 3) for f in fracs], "fraction_of_peak": statistics.median(fracs),
                  "fraction_of_peak_cpu_each": [round(f, 3) for f in fracs_cpu],
                  "fraction_of_peak_cpu": statistics.median(fracs_cpu)}
    return out


def case_update(quick: bool) -> list[dict]:
    """One PPO epoch over n env steps x K' denoising steps, at two minibatch sizes; and the no-grad pass
    that computes the old values and log-probs before it. Each repeat is paired with a matmul probe."""
    n = _size(quick)["update_env_steps"]
    model = B.ppo_diffusion()
    learner = B.ppo_learner(model)
    batch = B.random_batch(learner, n)
    fl = update_flops(model)
    out = []
    # the old-log-prob pass (forward only), in the runner's chunks of 10000 env steps
    cond, chains = batch.cond, batch.samples

    def old_pass():
        for s in range(0, n, 10000):
            v, lp = learner.score({"state": cond["state"][s:s + 10000]}, chains[s:s + 10000])
            lp.numpy()

    flop = n * KP * fl["actor_fwd_per_row"] + n * fl["critic_fwd_per_row"]
    r = timed_vs_peak(old_pass, flop)
    out.append(record("update", "old values + log-probs (no grad)", {"env_steps": n, "ft_denoising_steps": KP,
                                                                        "chunk": 10000},
                      {**r, "transitions_per_s": n * KP / r["median_s"]},
                      f"{_fmt(n * KP / r['median_s'])} transitions/s, {r['gflops']:.1f} GFLOP/s = "
                      f"{100 * r['fraction_of_peak']:.0f}% of the matmul probe in wall time, "
                      f"{100 * r['fraction_of_peak_cpu']:.0f}% in CPU time"))
    # transitions per minibatch: bs / K' env steps with all their transitions; batch 50000 (the gym configs'
    # minibatch, 5000 env steps) also in micro-batches of MICRO env steps (train.micro_batch), interleaved with it
    micro = B.ppo_learner(model, micro_batch=MICRO)
    for bs in (5000, 50000):
        total = n * KP
        done = (total // bs) * bs if total >= bs else total
        variants = {"": learner, f", micro-batches of {MICRO * KP}": micro} if bs == 50000 else {"": learner}
        results = timed_vs_peak_interleaved(
            {k: (lambda le=le, bs=bs: le.update(batch, True, bs // KP, 1, 0.5, 0.0, None))
             for k, le in variants.items()}, done * fl["per_transition"])
        for k, r in results.items():
            figs = {**r, "transitions": done, "transitions_per_s": done / r["median_s"],
                    "flops_per_transition": fl["per_transition"], **{f"flops_{part}": v for part, v in fl.items()},
                    "tracing_count": variants[k]._update.experimental_get_tracing_count()}
            out.append(record("update", f"1 epoch, batch {bs}{k}",
                              {"env_steps": n, "ft_denoising_steps": KP, "batch_size": bs, "update_epochs": 1,
                               "minibatches": max(1, total // bs),
                               "micro_batch_env_steps": variants[k].micro_batch or None}, figs,
                              f"{_fmt(done / r['median_s'])} denoising samples/s, {r['gflops']:.1f} GFLOP/s = "
                              f"{100 * r['fraction_of_peak']:.0f}% of the matmul probe in wall time "
                              f"({', '.join(f'{100 * x:.0f}%' for x in r['fraction_of_peak_each'])}), "
                              f"{100 * r['fraction_of_peak_cpu']:.0f}% in CPU time "
                              f"({', '.join(f'{100 * x:.0f}%' for x in r['fraction_of_peak_cpu_each'])})"))
    return out


# ---------------------------------------------------------------------------------------------------------
def _pretrain_agent(batch_size: int, windows: int):
    from omegaconf import OmegaConf

    from dppo.runners.pretrain import TrainDiffusionAgent
    B._register_resolvers()
    d = B.tmp_dir(f"pretrain{batch_size}")
    length = 256 + 3  # 256 windows of T_p = 4 per trajectory
    n_traj = max(1, windows // 256)
    rng = np.random.default_rng(0)
    np.savez(d / "train.npz", states=rng.standard_normal((n_traj * length, 11)).astype(np.float32),
             actions=np.clip(rng.standard_normal((n_traj * length, 3)), -1, 1).astype(np.float32),
             traj_lengths=np.full(n_traj, length, np.int64))
    cfg = OmegaConf.load(B.ROOT / "cfg/gym/pretrain/hopper-medium-v2/pre_diffusion_mlp.yaml")
    for key in ("hydra", "defaults"):
        cfg.pop(key, None)
    cfg.logdir = str(d / "log")
    cfg.wandb = None
    cfg.train_dataset_path = str(d / "train.npz")
    cfg.train.batch_size = batch_size
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return TrainDiffusionAgent(cfg)


def case_pretrain(quick: bool) -> list[dict]:
    """Pre-training epochs through TrainDiffusionAgent's compiled epoch (tf.data batches gathered in memory)."""
    windows = _size(quick)["pretrain_windows"]
    out = []
    for bs in (128, 1024):
        agent = _pretrain_agent(bs, windows)
        n_windows = len(agent.dataset)
        steps = -(-n_windows // bs)
        seed = [0]

        def go(agent=agent, bs=bs, seed=seed):
            seed[0] += 1  # a new shuffle each epoch, as the runner does
            if "order" in inspect.signature(agent._train_epoch_graph).parameters:
                float(agent._train_epoch(tf.constant(agent.dataset.permutation(seed[0]))))
            else:  # older runner: one epoch of a tf.data pipeline
                float(agent._train_epoch(agent.dataset.as_tf_dataset(bs, shuffle=True, seed=seed[0])))

        fwd = B.matmul_flops_per_row(agent.model.network)
        r = timed_vs_peak(go, 3 * fwd * n_windows)
        out.append(record("pretrain", f"batch {bs}", {"batch_size": bs, "windows": n_windows, "steps_per_epoch": steps,
                                                      "net": "DiffusionMLP 3x512 ReLU res", "horizon_steps": 4},
                          {**r, "steps_per_s": steps / r["median_s"], "samples_per_s": n_windows / r["median_s"],
                           "tracing_count": agent._train_epoch.experimental_get_tracing_count()},
                          f"{steps / r['median_s']:.1f} steps/s ({_fmt(n_windows / r['median_s'])} samples/s, "
                          f"{r['gflops']:.1f} GFLOP/s = {100 * r['fraction_of_peak']:.0f}% of the matmul probe in wall "
                          f"time, {100 * r['fraction_of_peak_cpu']:.0f}% in CPU time)"))
    return out


def case_ceiling(quick: bool) -> list[dict]:
    """What bounds the update and pre-training fractions of the probe. (1) The gym actor's own matmuls and
    nothing else: for each 2-D kernel W of the DiffusionMLP, the forward x @ W and the backward dy @ W^T and
    x^T @ dy, at the rows of a pre-training minibatch (128) and of the update's minibatches (5000 and 50000
    transitions). (2) The pre-training step at batch 128 with its AdamW step, and the same compiled epoch with
    the AdamW step replaced by reading the gradient norm (interleaved)."""
    net = B.diffusion_mlp()
    net(tf.zeros((2, 4, 3)), tf.zeros((2,), tf.int32), {"state": tf.zeros((2, 1, 11))})
    kernels = [w for w in net.trainable_variables if len(w.shape) == 2]
    out = []
    for rows in (128, 5000, 50000):
        xs = [tf.Variable(tf.random.normal((rows, w.shape[0]))) for w in kernels]  # variables: nothing folds
        dys = [tf.Variable(tf.random.normal((rows, w.shape[1]))) for w in kernels]
        flop = sum(3 * 2 * rows * int(w.shape[0]) * int(w.shape[1]) for w in kernels)
        reps = max(1, int((5e9 if quick else 2e10) // flop))

        @tf.function
        def products(n, xs=xs, dys=dys):
            total = tf.constant(0.0)
            for _ in tf.range(n):
                for w, x, dy in zip(kernels, xs, dys):
                    total += (tf.reduce_sum(tf.matmul(x, w)) + tf.reduce_sum(tf.matmul(dy, w, transpose_b=True))
                              + tf.reduce_sum(tf.matmul(x, dy, transpose_a=True)))
            return total

        n = tf.constant(reps)
        r = timed_vs_peak(lambda n=n: float(products(n)), flop * reps)
        out.append(record("ceiling", f"actor matmuls alone, {rows} rows",
                          {"rows": rows, "kernels": [list(map(int, w.shape)) for w in kernels], "calls": reps},
                          r, f"{r['gflops']:.1f} GFLOP/s = {100 * r['fraction_of_peak']:.0f}% of the matmul probe "
                             f"in wall time, {100 * r['fraction_of_peak_cpu']:.0f}% in CPU time"))
    windows = _size(quick)["pretrain_windows"]
    agents = {"with AdamW": _pretrain_agent(128, windows), "gradient norm only": _pretrain_agent(128, windows)}
    sink = tf.Variable(0.0)
    agents["gradient norm only"].optimizer.apply = lambda grads: sink.assign_add(tf.linalg.global_norm(grads))
    order = tf.constant(agents["with AdamW"].dataset.permutation(1))
    n_windows = len(agents["with AdamW"].dataset)
    steps = -(-n_windows // 128)
    fwd = B.matmul_flops_per_row(agents["with AdamW"].model.network)
    res = timed_vs_peak_interleaved({k: (lambda a=a: float(a._train_epoch(order))) for k, a in agents.items()},
                                    3 * fwd * n_windows)
    for k, r in res.items():
        out.append(record("ceiling", f"pretrain batch 128, {k}", {"batch_size": 128, "windows": n_windows},
                          {**r, "ms_per_step": 1e3 * statistics.median(r["cpu_seconds"]) / steps},
                          f"{1e3 * statistics.median(r['cpu_seconds']) / steps:.2f} ms per step (CPU), "
                          f"{100 * r['fraction_of_peak']:.0f}% of the matmul probe in wall time, "
                          f"{100 * r['fraction_of_peak_cpu']:.0f}% in CPU time"))
    return out


# ---------------------------------------------------------------------------------------------------------
def case_rollout(quick: bool) -> list[dict]:
    """Hopper-v5, 40 envs x n policy steps x 4 act steps: the runner's rollout with the model's act, the same
    envs with random actions and no policy (the floor), and the policy calls alone. Then the Avoid M2 rollout
    (50 envs x 25 steps x 4) with the sync vector env and with the batched one."""
    from dppo.envs.factory import make_vector_env
    steps = _size(quick)["rollout_steps"]
    venv = make_vector_env("hopper-medium-v2", 40, B.hopper_wrappers(B.hopper_normalization()), seed=0)
    out = [_rollout_record(venv, B.ppo_diffusion(), steps, 3, f"Hopper-v5 40 envs x {steps} steps x 4",
                           {"env": "hopper-medium-v2 (Hopper-v5)"})]
    cfg = B.avoid_m2_cfg("rollout-avoid")
    model = B.ppo_diffusion(obs_dim=4, action_dim=2)
    for batched in (False, True):
        venv = make_vector_env(cfg.env.name, cfg.env.n_envs, cfg.env.wrappers, seed=0, batched=batched)
        out.append(_rollout_record(venv, model, cfg.train.n_steps, 2,
                                   f"Avoid M2 50 envs x 25 steps x 4, {type(venv).__name__}",
                                   {"env": "avoiding-m5 (Avoid M2 demo wrappers)", "batched": batched}))
    return out


def _rollout_record(venv, model, steps: int, action_dim: int, variant: str, conf: dict) -> dict:
    from dppo.runners.rollout import as_cond, rollout
    n_e = venv.num_envs
    rng = np.random.default_rng(0)
    act_steps = 4
    values = B.ppo_learner(model).values  # the bootstrap values (the learner owns the compiled V(s))

    def with_policy():
        obs, _ = venv.reset(seed=0)
        rollout(venv, lambda c: model.act(c, False), obs, np.ones(n_e, np.float32), steps, act_steps, values)

    def floor():
        venv.reset(seed=0)
        for _ in range(steps):
            venv.step(rng.uniform(-1, 1, (n_e, act_steps, action_dim)).astype(np.float32))

    obs0, _ = venv.reset(seed=0)

    def policy_only():
        for _ in range(steps):
            a, c = model.act(as_cond(obs0), False)
            a.numpy(), c.numpy()

    env_steps = n_e * steps * act_steps
    res = {name: timed(fn, repeats=3, warmup=1) for name, fn in
           (("rollout", with_policy), ("floor", floor), ("policy_only", policy_only))}
    venv.close()
    rate = {k: env_steps / v["median_s"] for k, v in res.items()}
    ratio = res["rollout"]["median_s"] / res["floor"]["median_s"]
    figs = {"rollout": res["rollout"], "floor": res["floor"], "policy_only": res["policy_only"],
            "env_steps_per_s": rate["rollout"], "floor_env_steps_per_s": rate["floor"],
            "time_ratio_rollout_over_floor": ratio,
            "overhead_s": res["rollout"]["median_s"] - res["floor"]["median_s"] - res["policy_only"]["median_s"],
            "overhead_cpu_s": (res["rollout"]["median_cpu_s"] - res["floor"]["median_cpu_s"]
                               - res["policy_only"]["median_cpu_s"])}
    return record("rollout", variant,
                  {**conf, "n_envs": n_e, "n_steps": steps, "act_steps": act_steps,
                   "policy": "PPODiffusion.act, DDPM K=20 K'=10, random weights",
                   "counting": "n_envs*n_steps*act_steps"},
                  figs, f"{_fmt(rate['rollout'])} env steps/s with the policy, {_fmt(rate['floor'])} on the "
                        f"random-action floor (time ratio {ratio:.2f}); CPU seconds: rollout "
                        f"{res['rollout']['median_cpu_s']:.2f}, floor {res['floor']['median_cpu_s']:.2f}, the "
                        f"policy calls alone {res['policy_only']['median_cpu_s']:.2f}")


# ---------------------------------------------------------------------------------------------------------
def tracing_counts(agent) -> dict[str, int]:
    fns = {"sample": agent.model._sample, "score": agent.learner._score, "values": agent.learner._values,
           "update": agent.learner._update}
    return {k: int(f.experimental_get_tracing_count()) for k, f in fns.items()}


def timed_iterations(agent, n_itr: int) -> list[dict[str, Any]]:
    """``n_itr`` training iterations of TrainPPOAgent.run's loop body (train mode, no checkpoint writes),
    timed per phase: rollout (incl. resets), prep (old values/log-probs, reward scaling, GAE), update, logging
    (episode stats, trajectory plots where configured, schedulers, TensorBoard/CSV)."""
    from dppo.runners.episodes import episode_stats
    from dppo.runners.rollout import full_states, raw_paths
    from dppo.utils.logging import MetricLogger
    logger = MetricLogger(agent.logdir)
    obs, done = None, np.ones(agent.n_envs, np.float32)
    out = []
    for itr in range(n_itr):
        agent.itr = itr
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        if obs is None or agent.reset_at_iteration:
            obs, _ = agent.venv.reset(seed=agent.seed + itr if agent.reset_at_iteration else None)
            done = np.ones(agent.n_envs, np.float32)
        ro = agent.collect(obs, done, deterministic=False)
        obs, done = ro["last_obs"], ro["firsts"][-1]
        t1 = time.perf_counter()
        batch = agent.prepare_batch(ro)
        t2 = time.perf_counter()
        train_actor = itr >= agent.n_critic_warmup_itr
        upd = agent.learner.update(batch, train_actor, agent.batch_size, agent.update_epochs, agent.vf_coef,
                                   agent.ent_coef, agent.target_kl)
        t3 = time.perf_counter()
        stats = episode_stats(ro["rewards"], ro["firsts"], agent.act_steps, agent.success_threshold)
        agent.last_trajectories = raw_paths(ro, agent.normalization)
        agent.last_states = full_states(ro)
        metrics = {**{f"train/{k}": v for k, v in stats.items()}, **{f"loss/{k}": v for k, v in upd.items()}}
        if train_actor:
            agent.actor_scheduler.step()
            agent.actor_optimizer.set_lr(agent.actor_scheduler.lr)
        agent.critic_scheduler.step()
        agent.critic_optimizer.set_lr(agent.critic_scheduler.lr)
        if agent.plot_due(itr):
            agent.plot(itr)
        logger.log(itr, metrics)
        t4 = time.perf_counter()
        out.append({"itr": itr, "rollout_s": t1 - t0, "prep_s": t2 - t1, "update_s": t3 - t2, "logging_s": t4 - t3,
                    "total_s": t4 - t0, "load_1min": round(load, 2), "tracing": tracing_counts(agent)})
    logger.close()
    return out


def _iteration_record(variant: str, cfg, itrs: list[dict], notes: str, extrapolate_epochs: float = 1.0,
                      extrapolate_steps: float = 1.0, case: str = "iteration") -> dict:
    steady = itrs[1:] if len(itrs) > 1 else itrs
    med = {k: statistics.median(i[k] for i in steady) for k in ("rollout_s", "prep_s", "update_s", "logging_s",
                                                                  "total_s")}
    figs: dict[str, Any] = {"iterations": itrs, "median_steady": med,
                            "first_iteration_total_s": itrs[0]["total_s"],
                            "tracing_constant_after_first": all(i["tracing"] == itrs[0]["tracing"] for i in itrs)}
    summary = (f"rollout {med['rollout_s']:.2f} s, prep {med['prep_s']:.2f} s, update {med['update_s']:.2f} s, "
               f"logging {med['logging_s']:.2f} s = {med['total_s']:.2f} s/itr")
    if extrapolate_epochs != 1.0 or extrapolate_steps != 1.0:
        est = {"rollout_s": med["rollout_s"] * extrapolate_steps, "prep_s": med["prep_s"] * extrapolate_steps,
               "update_s": med["update_s"] * extrapolate_steps * extrapolate_epochs, "logging_s": med["logging_s"]}
        est["total_s"] = sum(est.values())
        figs["extrapolated"] = est
        summary = (f"extrapolated: rollout {est['rollout_s']:.1f} s, prep {est['prep_s']:.1f} s, update "
                   f"{est['update_s']:.1f} s, logging {est['logging_s']:.2f} s = {est['total_s']:.1f} s/itr "
                   f"(measured: {summary})")
    t = cfg.train
    conf = {"env": cfg.env.name, "n_envs": cfg.env.n_envs, "n_steps": t.n_steps, "act_steps": cfg.act_steps,
            "batch_size": t.batch_size, "update_epochs": t.update_epochs, "denoising_steps": cfg.denoising_steps,
            "ft_denoising_steps": cfg.ft_denoising_steps, "env_batched": cfg.env.get("batched", None)}
    return record(case, variant, conf, figs, notes + summary)


def case_iteration(quick: bool) -> list[dict]:
    """One full DPPO iteration on Hopper at the reference's size and at a two-core size; Avoid M2 (the demo)."""
    from dppo.runners.ppo import TrainPPOAgent
    size = _size(quick)
    out = []
    # Avoid M2, the demo's config (first iteration traces; steady state = the later ones), with the batched
    # vector env (the default) and with the sync one
    for batched in (True, False):
        cfg = B.avoid_m2_cfg(f"iter-avoid-{batched}", **{"env.batched": batched})
        itrs = timed_iterations(TrainPPOAgent(cfg), size["avoid_itrs"])
        out.append(_iteration_record(
            f"Avoid M2 (demo config: 50 envs x 25 steps, batch 625, 10 epochs), "
            f"{'batched' if batched else 'sync'} env", cfg, itrs, f"median of iterations 2..{len(itrs)}: "))
    # two-core size
    cfg = B.hopper_cfg("iter-small", **{"env.n_envs": 10, "train.n_steps": 100, "train.batch_size": 2500,
                                        "train.update_epochs": 2})
    itrs = timed_iterations(TrainPPOAgent(cfg), size["small_itrs"])
    out.append(_iteration_record("Hopper two-core (10 envs x 100 steps, batch 2500, 2 epochs)", cfg, itrs,
                                 f"median of iterations 2..{len(itrs)}: "))
    # the reference's size: 40 envs x 500 steps, batch 5000, 5 epochs; measured with fewer epochs/steps
    steps, epochs = size["ref_steps"], size["ref_epochs"]
    cfg = B.hopper_cfg("iter-ref", **{"train.n_steps": steps, "train.update_epochs": epochs})
    itrs = timed_iterations(TrainPPOAgent(cfg), 2)
    out.append(_iteration_record(
        "Hopper reference (40 envs x 500 steps, batch 5000, 5 epochs)", cfg, itrs,
        f"measured with n_steps {steps}, {epochs} epoch(s), 2nd of 2 iterations; ", extrapolate_epochs=5 / epochs,
        extrapolate_steps=500 / steps))
    return out


def case_reference(quick: bool) -> list[dict]:
    """Not in the default run (about 4 minutes here): the reference Hopper iteration measured as it is, 5 epochs."""
    from dppo.runners.ppo import TrainPPOAgent
    cfg = B.hopper_cfg("iter-ref-full")
    itrs = timed_iterations(TrainPPOAgent(cfg), 2)
    return [_iteration_record("Hopper reference (40 envs x 500 steps, batch 5000, 5 epochs), measured in full", cfg,
                              itrs, "2nd of 2 iterations: ", case="reference")]


# ---------------------------------------------------------------------------------------------------------
def _interleaved(fns: dict[str, Any], repeats: int = 3) -> dict[str, dict[str, Any]]:
    """First call of each (trace/compile) timed alone, then the repeats alternate between the functions."""
    res: dict[str, dict[str, Any]] = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        res[name] = {"first_call_s": time.perf_counter() - t0}
    runs: dict[str, list] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(timed(fn, repeats=1, warmup=0))
    for name, rs in runs.items():
        secs, cpus = [r["seconds"][0] for r in rs], [r["cpu_seconds"][0] for r in rs]
        res[name].update({"seconds": secs, "median_s": statistics.median(secs), "cpu_seconds": cpus,
                          "median_cpu_s": statistics.median(cpus), "load_1min": [r["load_1min"][0] for r in rs]})
    return res


def case_xla(quick: bool) -> list[dict]:
    """Not in the default run: the sampler and the update compiled with XLA (``jit_compile=True``) against the
    plain tf.function, repeats interleaved in one process."""
    out = []
    model = B.ppo_diffusion()
    xla_sample = tf.function(model._sample_graph, jit_compile=True, reduce_retracing=True)
    rng = np.random.default_rng(0)
    calls = 10
    for n in (10, 40):
        cond = {"state": tf.constant(rng.standard_normal((n, 1, 11)).astype(np.float32))}

        def run(fn, cond=cond):
            for _ in range(calls):
                a, c = fn(cond, deterministic=False, return_chain=True)
                a.numpy(), c.numpy()

        res = _interleaved({"plain": lambda run=run: run(model._sample), "xla": lambda run=run: run(xla_sample)})
        ms = {k: v["median_s"] / calls * 1e3 for k, v in res.items()}
        cpu = {k: v["median_cpu_s"] / calls * 1e3 for k, v in res.items()}
        out.append(record("xla", f"sampler, {n} envs", {"n_envs": n, "calls_per_repeat": calls}, res,
                          f"plain {ms['plain']:.1f} ms/call ({cpu['plain']:.1f} ms CPU) vs XLA {ms['xla']:.1f} "
                          f"({cpu['xla']:.1f} ms CPU); first call (trace + compile) {res['plain']['first_call_s']:.1f} "
                          f"s vs {res['xla']['first_call_s']:.1f} s"))
    n = 2000 if quick else 5000
    learner = B.ppo_learner(model)
    batch = B.random_batch(learner, n)
    flop = (n * KP // 5000) * 5000 * update_flops(model)["per_transition"]
    xla_update = tf.function(learner._update_graph, jit_compile=True)

    def upd(fn):
        o = fn(batch, tf.constant(True), batch_size=5000 // KP, update_epochs=1, vf_coef=0.5, ent_coef=0.0,
               target_kl=float("inf"))
        float(o["loss"])

    res = _interleaved({"plain": lambda: upd(learner._update), "xla": lambda: upd(xla_update)})
    gf = {k: flop / v["median_s"] / 1e9 for k, v in res.items()}
    for k in res:
        res[k]["gflops"] = gf[k]
    out.append(record("xla", f"update, {n} env steps, batch 5000", {"env_steps": n, "batch_size": 5000}, res,
                      f"plain {gf['plain']:.1f} GFLOP/s vs XLA {gf['xla']:.1f} GFLOP/s; first call "
                      f"{res['plain']['first_call_s']:.1f} s vs {res['xla']['first_call_s']:.1f} s"))
    return out


CASES = {"peak": case_peak, "sample": case_sample, "update": case_update, "pretrain": case_pretrain,
         "ceiling": case_ceiling, "rollout": case_rollout, "iteration": case_iteration}
OPTIONAL = {"reference": case_reference, "xla": case_xla}  # run only when named with --case


# ---------------------------------------------------------------------------------------------------------
# issue #17 (speed and scale): EnvPool, rollout overlap, bf16, MirroredStrategy. Optional cases (--case NAME).
def _floor_fn(venv, steps: int, action_dim: int, act_steps: int = 4, seed: int = 0):
    acts = np.random.default_rng(seed).uniform(-1, 1, (steps, venv.num_envs, act_steps, action_dim)).astype(np.float32)

    venv.reset(seed=seed)

    def floor():  # no seeded reset per repeat: EnvPool rebuilds its pool for one (40-70 ms)
        venv.reset()
        for a in acts:
            venv.step(a)
    return floor


def case_envpool(quick: bool) -> list[dict]:
    """The random-action floor (40 envs x n steps x 4, the config's wrappers) with env.backend gymnasium and
    envpool, repeats interleaved; EnvPool's raw pool (no wrappers) for reference; then the Hopper rollout with
    the policy on each backend."""
    from dppo.envs.factory import envpool_available, make_vector_env
    if not envpool_available():
        print("envpool is not installed (pip install -e '.[fast]'): case skipped")
        return []
    import envpool

    from dppo.envs.locomotion import ROBOTS
    from dppo.runners.rollout import rollout
    steps = _size(quick)["rollout_steps"]
    out = []
    acts_dim = {"hopper": 3, "walker2d": 6, "halfcheetah": 6}
    obs_dim = {"hopper": 11, "walker2d": 17, "halfcheetah": 17}
    for robot in ("hopper", "walker2d", "halfcheetah"):
        norm = B.locomotion_normalization(robot, obs_dim[robot], acts_dim[robot])
        wraps = B.hopper_wrappers(norm)
        venvs = {b: make_vector_env(f"{robot}-medium-v2", 40, wraps, seed=0, backend=b) for b in ("gymnasium",
                                                                                                   "envpool")}
        pool = envpool.make(ROBOTS[robot], env_type="gymnasium", num_envs=40, seed=0)
        raw_acts = np.random.default_rng(0).uniform(-1, 1, (steps * 4, 40, acts_dim[robot]))

        pool.reset()

        def raw(pool=pool, raw_acts=raw_acts):
            pool.reset()
            for a in raw_acts:
                pool.step(a)
        fns = {b: _floor_fn(v, steps, acts_dim[robot]) for b, v in venvs.items()}
        res = _interleaved({**fns, "envpool_raw": raw})
        env_steps = 40 * steps * 4
        rate = {k: env_steps / v["median_s"] for k, v in res.items()}
        ratio = res["gymnasium"]["median_s"] / res["envpool"]["median_s"]
        ratio_cpu = res["gymnasium"]["median_cpu_s"] / res["envpool"]["median_cpu_s"]
        for v in venvs.values():
            v.close()
        out.append(record("envpool", f"{robot} floor, 40 envs x {steps} steps x 4", {
            "env": f"{robot}-medium-v2 ({ROBOTS[robot]})", "n_envs": 40, "n_steps": steps, "act_steps": 4,
            "wrappers": "mujoco_locomotion_lowdim + multi_step (reset_within_step)", "envpool_threads": "default"},
            {**res, "env_steps_per_s": rate, "speedup_wall": ratio, "speedup_cpu": ratio_cpu},
            f"gymnasium {_fmt(rate['gymnasium'])} env steps/s, envpool {_fmt(rate['envpool'])} "
            f"({ratio:.2f}x wall, {ratio_cpu:.2f}x CPU); envpool without wrappers {_fmt(rate['envpool_raw'])}"))
    # the Hopper rollout with the policy, both backends
    norm = B.hopper_normalization()
    model = B.ppo_diffusion()
    learner = B.ppo_learner(model)
    fns = {}
    for b in ("gymnasium", "envpool"):
        venv = make_vector_env("hopper-medium-v2", 40, B.hopper_wrappers(norm), seed=0, backend=b)
        venv.reset(seed=0)

        def with_policy(venv=venv):
            obs, _ = venv.reset()
            rollout(venv, lambda c: model.act(c, False), obs, np.ones(40, np.float32), steps, 4, learner.values)
        fns[b] = with_policy
    res = _interleaved(fns)
    env_steps = 40 * steps * 4
    ratio = res["gymnasium"]["median_s"] / res["envpool"]["median_s"]
    out.append(record("envpool", f"Hopper rollout with the policy, 40 envs x {steps} steps x 4",
                      {"n_envs": 40, "n_steps": steps, "policy": "PPODiffusion.act, DDPM K=20 K'=10, random weights"},
                      {**res, "speedup_wall": ratio},
                      f"gymnasium {_fmt(env_steps / res['gymnasium']['median_s'])} env steps/s, envpool "
                      f"{_fmt(env_steps / res['envpool']['median_s'])} ({ratio:.2f}x; CPU s "
                      f"{res['gymnasium']['median_cpu_s']:.2f} vs {res['envpool']['median_cpu_s']:.2f})"))
    return out


OPTIONAL["envpool"] = case_envpool


class _Timed:
    """Wraps a vector env and an act function to add up the seconds spent in each (the rollout's timeline)."""

    def __init__(self, venv, act):
        self.venv, self._act = venv, act
        self.num_envs = venv.num_envs
        self.t = {"sample": 0.0, "env": 0.0}

    def act(self, cond):
        t0 = time.perf_counter()
        a, s = self._act(cond)
        a, s = tf.constant(a.numpy()), (None if s is None else tf.constant(s.numpy()))  # wait for the graph
        self.t["sample"] += time.perf_counter() - t0
        return a, s

    def step(self, actions):
        t0 = time.perf_counter()
        out = self.venv.step(actions)
        self.t["env"] += time.perf_counter() - t0
        return out

    def reset(self, **kw):
        return self.venv.reset(**kw)


def case_overlap(quick: bool) -> list[dict]:
    """The Hopper rollout (40 envs x n steps x 4) as a timeline (seconds in sampling, env steps and the rest), and
    with ``env.overlap`` (two halves of 20 envs, one stepped in a worker thread while the policy samples for the
    other) against the plain rollout, 5 repeats interleaved; per env backend."""
    from dppo.envs.factory import envpool_available, make_vector_env
    from dppo.runners.rollout import rollout
    steps = _size(quick)["rollout_steps"]
    norm = B.hopper_normalization()
    model = B.ppo_diffusion()
    learner = B.ppo_learner(model)
    out = []
    for backend in ("gymnasium", "envpool") if envpool_available() else ("gymnasium",):
        full = make_vector_env("hopper-medium-v2", 40, B.hopper_wrappers(norm), seed=0, backend=backend)
        split = make_vector_env("hopper-medium-v2", 40, B.hopper_wrappers(norm), seed=0, backend=backend,
                                overlap=True)
        timed_env = _Timed(full, lambda c: model.act(c, False))
        timeline = []

        def run(venv):
            def go():
                obs, _ = venv.reset()
                rollout(venv, lambda c: model.act(c, False), obs, np.ones(40, np.float32), steps, 4, learner.values)
            return go

        def with_timeline(timed_env=timed_env, full=full, timeline=timeline):
            timed_env.t = {"sample": 0.0, "env": 0.0}
            obs, _ = full.reset()
            t0 = time.perf_counter()
            rollout(timed_env, timed_env.act, obs, np.ones(40, np.float32), steps, 4, learner.values)
            total = time.perf_counter() - t0
            timeline.append({**timed_env.t, "other": total - sum(timed_env.t.values()), "total": total})

        res = _interleaved({"plain": run(full), "overlap": run(split), "timeline": with_timeline}, repeats=5)
        tl = {k: statistics.median(t[k] for t in timeline[1:] or timeline) for k in timeline[0]}
        speed = res["plain"]["median_s"] / res["overlap"]["median_s"]
        speed_cpu = res["plain"]["median_cpu_s"] / res["overlap"]["median_cpu_s"]
        out.append(record("overlap", f"Hopper rollout 40 envs x {steps} steps x 4, {backend}",
                          {"backend": backend, "n_envs": 40, "n_steps": steps, "halves": 2},
                          {**res, "timeline_s": tl, "speedup_wall": speed, "speedup_cpu": speed_cpu},
                          f"timeline of the plain rollout: sampling {tl['sample']:.2f} s, env steps {tl['env']:.2f} s, "
                          f"rest {tl['other']:.2f} s = {tl['total']:.2f} s; plain {res['plain']['median_s']:.2f} s vs "
                          f"env.overlap {res['overlap']['median_s']:.2f} s ({speed:.2f}x wall; CPU seconds "
                          f"{res['plain']['median_cpu_s']:.2f} vs {res['overlap']['median_cpu_s']:.2f})"))
        full.close()
        split.close()
    return out


OPTIONAL["overlap"] = case_overlap


def case_bf16(quick: bool) -> list[dict]:
    """mixed_bfloat16 against float32: PPO update, sampler, pre-training epoch speed (repeats interleaved), and the
    effect on the DPPO losses: the same batch scored and differentiated by the same weights in both precisions,
    then both models trained from the same weights on the same batches for a few epochs."""
    import keras

    from dppo.utils.precision import set_policy
    n = _size(quick)["update_env_steps"] // 4
    out = []
    models = {}
    for name in ("float32", "mixed_bfloat16"):
        set_policy(name)
        models[name] = B.ppo_diffusion()
    set_policy("float32")
    f32, b16 = models["float32"], models["mixed_bfloat16"]
    for a, b in zip(f32.network.weights + f32.actor_ft.weights + f32.critic.weights,
                    b16.network.weights + b16.actor_ft.weights + b16.critic.weights):
        b.assign(a)
    learners = {k: B.ppo_learner(m) for k, m in models.items()}
    batch = B.random_batch(learners["float32"], n)  # old values/log-probs in float32, as a float32 rollout has them
    chains = models["float32"].sample({"state": batch.cond["state"]}, return_chain=True)[1]  # on-policy chains
    batch = batch._replace(samples=chains)
    v, lp = learners["float32"].score(batch.cond, chains)
    batch = batch._replace(values=v, log_probs=lp)
    # 1. the same batch, the same weights: loss terms, old log-probs, gradients
    idx = tf.range(500)
    mb = (tf.gather(batch.cond["state"], idx), tf.gather(batch.samples, idx), tf.gather(batch.returns, idx),
          tf.gather(batch.values, idx), tf.gather(batch.advantages, idx), tf.gather(batch.log_probs, idx))
    terms, grads, scores = {}, {}, {}
    for k, lrn in learners.items():
        variables = [*models[k].trainable_actor_variables(), *models[k].critic.trainable_variables]
        with tf.GradientTape() as tape:
            t = lrn.loss({"state": mb[0]}, *mb[1:])
            loss = t["pg_loss"] + 0.5 * t["v_loss"]
        g = tape.gradient(loss, variables)
        terms[k] = {key: float(x) for key, x in t.items()}
        grads[k] = tf.concat([tf.reshape(x, [-1]) for x in g], 0).numpy()
        scores[k] = [x.numpy() for x in lrn.score({"state": mb[0]}, mb[1])]
    ga, gb = grads["float32"], grads["mixed_bfloat16"]
    cos = float(ga @ gb / np.linalg.norm(ga) / np.linalg.norm(gb))
    lp_err = np.abs(scores["float32"][1] - scores["mixed_bfloat16"][1])
    v_err = np.abs(scores["float32"][0] - scores["mixed_bfloat16"][0])
    clip = models["float32"].ppo_clip.numpy()
    out.append(record("bf16", "DPPO loss terms, same batch and weights (500 env steps x 10)",
                      {"env_steps": 500, "ft_denoising_steps": KP},
                      {"terms": terms, "grad_cosine": cos, "logprob_abs_err_median": float(np.median(lp_err)),
                       "logprob_abs_err_max": float(lp_err.max()), "value_abs_err_max": float(v_err.max()),
                       "ppo_clip_range": [float(clip.min()), float(clip.max())]},
                      f"pg_loss {terms['float32']['pg_loss']:.3g} vs {terms['mixed_bfloat16']['pg_loss']:.3g}, "
                      f"v_loss {terms['float32']['v_loss']:.4g} vs {terms['mixed_bfloat16']['v_loss']:.4g}, clipfrac "
                      f"{terms['float32']['clipfrac']:.3f} vs {terms['mixed_bfloat16']['clipfrac']:.3f}, approx_kl "
                      f"{terms['float32']['approx_kl']:.2g} vs {terms['mixed_bfloat16']['approx_kl']:.2g}; per-"
                      f"transition log-prob error median {np.median(lp_err):.3g} (max {lp_err.max():.3g}) against a "
                      f"ratio clip of {clip.min():.3g}-{clip.max():.3g}; gradient cosine {cos:.3f}"))
    # 2. training from the same weights on the same batches: loss after each of 5 epochs
    curves = {}
    for k, lrn in learners.items():
        curves[k] = [lrn.update(batch, True, 500, 1, 0.5, 0.0, None) for _ in range(5)]
    drift = max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in zip(
        f32.actor_ft.weights + f32.critic.weights, b16.actor_ft.weights + b16.critic.weights))
    out.append(record("bf16", f"5 epochs from the same weights ({n} env steps, batch 500)", {"env_steps": n},
                      {"curves": curves, "weight_drift_max": drift},
                      "v_loss per epoch: float32 " + ", ".join(f"{c['v_loss']:.4g}" for c in curves["float32"])
                      + " / bf16 " + ", ".join(f"{c['v_loss']:.4g}" for c in curves["mixed_bfloat16"])
                      + "; clipfrac float32 " + ", ".join(f"{c['clipfrac']:.2f}" for c in curves["float32"])
                      + " / bf16 " + ", ".join(f"{c['clipfrac']:.2f}" for c in curves["mixed_bfloat16"])
                      + f"; max weight difference after 5 epochs {drift:.3g}"))
    # 3. speed, repeats interleaved (fresh learners: the update above changed the weights, not the cost)
    cond40 = {"state": tf.constant(np.random.default_rng(0).standard_normal((40, 1, 11)).astype(np.float32))}
    fl = update_flops(f32)["per_transition"] * (n * KP // 5000) * 5000

    def upd(k):
        return lambda: learners[k].update(batch, True, 500, 1, 0.5, 0.0, None)

    def samp(k):
        def go():
            for _ in range(10):
                a, c = models[k].act(cond40, False)
                a.numpy()
        return go
    res = _interleaved({"update_float32": upd("float32"), "update_bf16": upd("mixed_bfloat16"),
                        "sample_float32": samp("float32"), "sample_bf16": samp("mixed_bfloat16")})
    speed = {k: res[f"{k}_float32"]["median_cpu_s"] / res[f"{k}_bf16"]["median_cpu_s"] for k in ("update", "sample")}
    speed_wall = {k: res[f"{k}_float32"]["median_s"] / res[f"{k}_bf16"]["median_s"] for k in ("update", "sample")}
    out.append(record("bf16", f"speed: PPO update ({n} env steps x 10, batch 5000), sampler (40 envs x 10 calls)",
                      {"env_steps": n}, {**res, "speedup_cpu": speed, "speedup_wall": speed_wall,
                                         "update_gflops_per_cpu_s": {k: fl / res[f"update_{k}"]["median_cpu_s"] / 1e9
                                                                     for k in ("float32", "bf16")}},
                      f"update {speed['update']:.2f}x less CPU time in bf16 ({speed_wall['update']:.2f}x wall), "
                      f"sampler {speed['sample']:.2f}x ({speed_wall['sample']:.2f}x wall)"))
    # 4. pre-training epoch (batch 1024)
    agents = {}
    for name in ("float32", "mixed_bfloat16"):
        set_policy(name)
        agents[name] = _pretrain_agent(1024, _size(quick)["pretrain_windows"])
    set_policy("float32")
    seed = [0]

    def epoch(k):
        def go():
            seed[0] += 1
            float(agents[k]._train_epoch(tf.constant(agents[k].dataset.permutation(seed[0]))))
        return go
    res = _interleaved({k: epoch(k) for k in agents})
    sp = res["float32"]["median_cpu_s"] / res["mixed_bfloat16"]["median_cpu_s"]
    out.append(record("bf16", "speed: pre-training epoch, batch 1024", {"windows": len(agents["float32"].dataset)},
                      {**res, "speedup_cpu": sp},
                      f"{sp:.2f}x less CPU time in bf16 "
                      f"({res['float32']['median_s'] / res['mixed_bfloat16']['median_s']:.2f}x "
                      f"wall); first-epoch loss after the timed epochs: float32 "
                      f"{float(agents['float32']._train_epoch(tf.constant(agents['float32'].dataset.permutation(0)))):.4f}"
                      f" vs bf16 "
                      f"{float(agents['mixed_bfloat16']._train_epoch(tf.constant(agents['mixed_bfloat16'].dataset.permutation(0)))):.4f}"))
    keras.mixed_precision.set_global_policy("float32")
    return out


OPTIONAL["bf16"] = case_bf16


_DISTRIBUTE_SCRIPT = r'''
import json, statistics, sys, time
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, __ROOT__)
from benchmarks import builders as B
from dppo.algos.distributed import MirroredPPOLearner, make_strategy, scope
from dppo.utils.optim import AdamW
n = __N__
strategy = make_strategy(["/cpu:0", "/cpu:1"])
one = B.ppo_diffusion(); l1 = B.ppo_learner(one)
with scope(strategy):
    two = B.ppo_diffusion()
    opts = (AdamW(two.trainable_actor_variables(), 1e-4), AdamW(two.critic.trainable_variables, 1e-3))
l2 = MirroredPPOLearner(strategy, two, *opts, seed=0)
batch = B.random_batch(l1, n)
fns = {"one_device": lambda: l1.update(batch, True, 500, 1, 0.5, 0.0, None),
       "mirrored_2_logical_cpus": lambda: l2.update(batch, True, 500, 1, 0.5, 0.0, None)}
res = {k: {"first_s": 0.0, "wall": [], "cpu": []} for k in fns}
for k, f in fns.items():
    t = time.perf_counter(); f(); res[k]["first_s"] = time.perf_counter() - t
for _ in range(3):
    for k, f in fns.items():
        t, c = time.perf_counter(), time.process_time(); f()
        res[k]["wall"].append(time.perf_counter() - t); res[k]["cpu"].append(time.process_time() - c)
print("RESULT " + json.dumps(res))
'''


def case_distribute(quick: bool) -> list[dict]:
    """The PPO update (n env steps x 10, batch 5000 transitions, 1 epoch) on one device and with MirroredStrategy
    over the CPU split into 2 logical devices (same cores: this measures the strategy's overhead, not a speedup;
    a second GPU is what it is for). In a subprocess: logical devices must be set before TensorFlow starts."""
    import json
    import subprocess
    import sys
    n = _size(quick)["update_env_steps"] // 4
    code = _DISTRIBUTE_SCRIPT.replace("__ROOT__", repr(str(B.ROOT))).replace("__N__", str(n))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    res = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    med = {k: {"wall": statistics.median(v["wall"]), "cpu": statistics.median(v["cpu"])} for k, v in res.items()}
    a, b = med["one_device"], med["mirrored_2_logical_cpus"]
    return [record("distribute", f"PPO update, {n} env steps x 10, batch 5000, 1 epoch", {"env_steps": n},
                   {**res, "median": med},
                   f"one device {a['wall']:.2f} s ({a['cpu']:.2f} CPU s), MirroredStrategy on 2 logical CPUs "
                   f"{b['wall']:.2f} s ({b['cpu']:.2f} CPU s): {b['wall'] / a['wall']:.2f}x the time; first call "
                   f"(trace) {res['one_device']['first_s']:.1f} s vs "
                   f"{res['mirrored_2_logical_cpus']['first_s']:.1f} s")]


OPTIONAL["distribute"] = case_distribute


def case_budget(quick: bool) -> list[dict]:
    """The reference Hopper iteration (40 envs x 500 steps, batch 5000 env steps, 5 epochs; measured with 1 epoch
    and extrapolated as in the iteration case) with each of this issue's options: the default (gymnasium envs,
    float32), train.micro_batch, env.overlap, env.backend=envpool, mixed_precision=mixed_bfloat16, and
    combinations. Iterations interleaved across the agents (2 each; the second is reported)."""
    from dppo.envs.factory import envpool_available
    from dppo.runners.ppo import TrainPPOAgent
    from dppo.utils.precision import set_policy
    steps = _size(quick)["ref_steps"]
    variants = {"default": {}, "micro-batch": {"train.micro_batch": MICRO},
                "bf16": {"mixed_precision": "mixed_bfloat16"}, "overlap": {"env.overlap": True},
                "overlap + bf16": {"env.overlap": True, "mixed_precision": "mixed_bfloat16"}}
    if envpool_available():
        variants["envpool"] = {"env.backend": "envpool"}
        variants["envpool + bf16"] = {"env.backend": "envpool", "mixed_precision": "mixed_bfloat16"}
    agents, cfgs = {}, {}
    for name, over in variants.items():
        cfgs[name] = B.hopper_cfg(f"budget-{name.replace(' ', '')}", **{"train.n_steps": steps,
                                                                          "train.update_epochs": 1, **over})
        agents[name] = TrainPPOAgent(cfgs[name])
    set_policy("float32")
    runs: dict[str, list] = {name: [] for name in variants}
    for _ in range(2):
        for name, agent in agents.items():
            runs[name] += timed_iterations(agent, 1)
    out = []
    for name, itrs in runs.items():
        out.append(_iteration_record(f"Hopper reference iteration, {name}", cfgs[name], itrs,
                                     f"measured with n_steps {steps}, 1 epoch, 2nd of 2 iterations; ",
                                     extrapolate_epochs=5, extrapolate_steps=500 / steps, case="budget"))
    return out


OPTIONAL["budget"] = case_budget


def case_robosuite(quick: bool) -> list[dict]:
    """Robosuite Can, 4 envs, random actions: env steps/s with ``env.vector`` sync (one process) and subprocess
    (2 and 4 workers), rounds interleaved (:mod:`benchmarks.can_vector`)."""
    from benchmarks.can_vector import measure, robosuite_available
    if not robosuite_available():
        print("robosuite is not installed: case skipped")
        return []
    n_envs, steps, rounds = 4, _size(quick)["can_steps"], _size(quick)["can_rounds"]
    res = measure(n_envs, steps, rounds, (2, 4))
    base = res["sync"]["median_env_steps_per_s"]
    speedup = {k: v["median_env_steps_per_s"] / base for k, v in res.items()}
    return [record("robosuite", f"Can, {n_envs} envs x {steps} random-action steps, sync vs subprocess",
                   {"env": "can (robosuite, no wrappers)", "n_envs": n_envs, "steps": steps, "rounds": rounds,
                    "autoreset_mode": "SameStep", "workers": [2, 4], "usable_cores": len(os.sched_getaffinity(0))},
                   {**res, "speedup_wall": speedup},
                   ", ".join(f"{k} {_fmt(v['median_env_steps_per_s'])} env steps/s ({speedup[k]:.2f}x)"
                             for k, v in res.items()) + f" (median of {rounds} interleaved rounds)")]


CASES["robosuite"] = case_robosuite  # in every `make bench`: the robomimic tasks are robosuite-bound
