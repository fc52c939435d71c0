"""Writes the notebooks from their cell sources: `python notebooks/build.py`; then
`python notebooks/build.py --execute` runs them at their full settings and stores them with
their outputs, so that a reader sees the results without running anything.

Keeping the sources here makes them reviewable as code; `tests/test_notebooks.py` checks
that the stored cells match these sources and carry their outputs, and executes the
notebooks top to bottom with the small settings (DASBI_NOTEBOOK_SMALL=1).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

PARAMS_NOTE = (
    "The first code cell holds every setting. Under `DASBI_NOTEBOOK_SMALL=1` (CI) they "
    "shrink so the notebook runs in a minute or two on 2 cores."
)

NB1 = [
    (
        "md",
        "# 1. Simulate field stars and YSOs, and look at them\n\n"
        "A Galactic field-star population (thin/thick disc, halo, bulge; MIST isochrones, "
        "PHOENIX-mangled CK04 atmospheres, G23 dust) and a YSO population with R17-style SEDs, "
        "both observed "
        "through Gaia, 2MASS, WISE and Spitzer with survey depths, noise and missing values. "
        + PARAMS_NOTE,
    ),
    (
        "code",
        "import os\n"
        "SMALL = os.environ.get('DASBI_NOTEBOOK_SMALL') == '1'\n"
        "NUM_STARS = 3000 if SMALL else 50000      # field stars\n"
        "NUM_YSO = 600 if SMALL else 5000          # YSOs\n"
        "LIBRARY = 'phoenix'                       # CK04 mangled to PHOENIX v2\n"
        "YSO_MODEL_SET = 'sp--s-i'                 # star + passive disc (R17)\n"
        "OUT = 'runs/notebook1'\n"
        "SEED = 1",
    ),
    (
        "code",
        "%matplotlib inline\n"
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "\n"
        "from dasbi import plots\n"
        "from dasbi.config import from_dict\n"
        "from dasbi.dataset import Dataset\n"
        "from dasbi.simulate import SimulateConfig, run_simulate\n"
        "\n"
        "os.makedirs(OUT, exist_ok=True)",
    ),
    ("md", "## Field stars\n\n`run_simulate` is what `dasbi simulate` calls; rerunning resumes."),
    (
        "code",
        "cfg = from_dict(SimulateConfig, {'num': NUM_STARS, 'seed': SEED, 'simulator': "
        "{'name': 'field_stars', 'library': LIBRARY}})\n"
        "stars = Dataset(run_simulate(cfg, f'{OUT}/stars.h5', overwrite=True, progress=False))\n"
        "blocks = stars.read()\n"
        "def table(ds, blocks, kind):\n"
        "    out = {}\n"
        "    for g in ds.groups:\n"
        "        for j, n in enumerate(ds.nodes.group(g)):\n"
        "            if n.kind == kind and n.role == 'diffuse':\n"
        "                b = blocks[g]\n"
        "                out[n.name] = np.where(b.observed[:, j], b.values[:, j], np.nan)\n"
        "    return out\n"
        "theta, mags = table(stars, blocks, 'parameter'), table(stars, blocks, 'observable')\n"
        "print(len(stars), 'stars; parameters:', list(theta))",
    ),
    (
        "code",
        "fig, axes = plt.subplots(1, 4, figsize=(14, 3))\n"
        "for ax, (name, tr) in zip(axes, [('teff', np.log10), ('logg', None), "
        "('distance', np.log10), ('av', None)], strict=True):\n"
        "    v = theta[name]\n"
        "    ax.hist(tr(v) if tr else v, bins=40, color='C0')\n"
        "    ax.set_xlabel(('log10 ' if tr else '') + name)\n"
        "fig.suptitle('Field-star parameters drawn from the Galactic model')\n"
        "fig.tight_layout()",
    ),
    (
        "code",
        "fig = plots.plot_cmd(mags)\nfig = plots.plot_colour_colour(mags)",
    ),
    (
        "code",
        "bands = [b for b in mags if b != 'parallax']\n"
        "frac = [np.isfinite(mags[b]).mean() for b in bands]\n"
        "fig, ax = plt.subplots(figsize=(8, 3))\n"
        "ax.bar(bands, frac, color='C2')\n"
        "ax.set_ylabel('fraction observed')\n"
        "ax.tick_params(axis='x', rotation=60)\n"
        "ax.set_title('Missing values: survey depths and sky coverage')\n"
        "fig.tight_layout()",
    ),
    ("md", "## YSOs\n\nStars with passive discs seen through dust at 100-2000 pc."),
    (
        "code",
        "cfg = from_dict(SimulateConfig, {'num': NUM_YSO, 'seed': SEED, 'simulator': "
        "{'name': 'yso', 'library': LIBRARY, 'model_set': YSO_MODEL_SET}})\n"
        "ysos = Dataset(run_simulate(cfg, f'{OUT}/yso.h5', overwrite=True, progress=False))\n"
        "yb = ysos.read()\n"
        "ytheta, ymags = table(ysos, yb, 'parameter'), table(ysos, yb, 'observable')\n"
        "print(list(ytheta))",
    ),
    (
        "code",
        "# the classic IRAC colour-colour diagram (Allen et al. 2004): discs are red in both\n"
        "fig = plots.plot_colour_colour(ymags, x=('irac_3', 'irac_4'), y=('irac_1', 'irac_2'))\n"
        "fig.axes[0].set_title('YSOs: Spitzer/IRAC colours')\n"
        "fig = plots.plot_colour_colour(ymags, mags)\n"
        "fig.axes[0].set_title('J-H vs H-Ks: YSOs (blue) against field stars (red)')",
    ),
    (
        "code",
        "fig, ax = plt.subplots(figsize=(5, 4))\n"
        "sc = ax.scatter(np.log10(ytheta['disk.mass']), ymags['irac_2'] - ymags['mips_24'], "
        "c=ytheta['inclination'], s=5)\n"
        "ax.set_xlabel('log10 disc mass (M_sun)')\n"
        "ax.set_ylabel('[4.5] - [24]')\n"
        "fig.colorbar(sc, label='inclination (deg)')\n"
        "fig.tight_layout()",
    ),
]

NB2 = [
    (
        "md",
        "# 2. Train a Simformer; sample posteriors and any conditional\n\n"
        "One score model over the joint (θ, x) of field stars gives the posterior p(θ | x), "
        "the likelihood p(x | θ) and any conditional in between, with missing bands "
        "marginalised and upper limits respected. The photospheres are PHOENIX-mangled CK04 "
        "spectra, so log g and [Fe/H] shape the SED (weakly, in broad bands: their posteriors "
        "stay wide). " + PARAMS_NOTE,
    ),
    (
        "code",
        "import os\n"
        "SMALL = os.environ.get('DASBI_NOTEBOOK_SMALL') == '1'\n"
        "NUM_SIMS = 4000 if SMALL else 30000\n"
        "STEPS = 150 if SMALL else 3000\n"
        "NETWORK = {'dim': 32, 'depth': 2, 'heads': 2} if SMALL else "
        "{'dim': 64, 'depth': 3, 'heads': 4}\n"
        "NUM_SAMPLES = 300 if SMALL else 2000\n"
        "OUT = 'runs/notebook2'\n"
        "SEED = 2",
    ),
    (
        "code",
        "%matplotlib inline\n"
        "import numpy as np\n"
        "from IPython.display import Image\n"
        "\n"
        "from dasbi import plots\n"
        "from dasbi.config import from_dict\n"
        "from dasbi.dataset import Dataset\n"
        "from dasbi.evaluate import EvaluateConfig, run_evaluate\n"
        "from dasbi.posterior import Posterior\n"
        "from dasbi.simulate import SimulateConfig, run_simulate\n"
        "from dasbi.train import TrainConfig, train\n"
        "from simulators.bandpasses import pivot_wavelength\n"
        "\n"
        "os.makedirs(OUT, exist_ok=True)",
    ),
    (
        "code",
        "sim = {'name': 'field_stars', 'library': 'phoenix', "
        "'surveys': ['gaia_dr3', '2mass', 'allwise'], 'xp': False}\n"
        "data = run_simulate(from_dict(SimulateConfig, {'num': NUM_SIMS, 'seed': SEED, "
        "'simulator': sim}), f'{OUT}/train.h5', overwrite=True, progress=False)\n"
        "test = Dataset(run_simulate(from_dict(SimulateConfig, {'num': 200, 'seed': 99, "
        "'simulator': sim}), f'{OUT}/test.h5', overwrite=True, progress=False))\n"
        "cfg = from_dict(TrainConfig, {'network': NETWORK, 'max_steps': STEPS, "
        "'batch_size': 256, 'val_every': max(50, STEPS // 10), 'warmup_steps': 20})\n"
        "result = train(data, cfg, out=f'{OUT}/model', overwrite=True, progress=False)\n"
        "post = Posterior.load(f'{OUT}/model')\n"
        "post",
    ),
    ("md", "## The posterior of one star, in physical units"),
    (
        "code",
        "b = test.read(0, 1)\n"
        "names = post.observable_names\n"
        "idx = {n.name: (g, j) for g in test.groups for j, n in enumerate(test.nodes.group(g))}\n"
        "def row(field):\n"
        "    return np.array([getattr(b[idx[n][0]], field)[0, idx[n][1]] for n in names])\n"
        "x, err, seen, lim = row('values'), row('errors'), row('observed'), row('upper_limit')\n"
        "truth = np.array([b['theta'].values[0, idx[p][1]] for p in post.parameter_names])\n"
        "theta = post.sample((NUM_SAMPLES,), x=np.where(seen, x, np.nan), observed=seen, "
        "errors=np.where(seen, err, 0.0), upper_limits=lim & seen, seed=0).numpy()\n"
        "show = {'teff': True, 'logg': False, 'feh': False, 'distance': True, 'av': False}\n"
        "cols = [post.parameter_names.index(n) for n in show]\n"
        "def tf(v):\n"
        "    return np.where(list(show.values()), np.log10(np.abs(v)), v)\n"
        "fig = plots.corner_plot(tf(theta[:, cols]), "
        "[('log10 ' if lg else '') + n for n, lg in show.items()], truths=tf(truth[cols]))",
    ),
    (
        "md",
        "## Missing bands and upper limits\n\nDrop the WISE bands (marginalised: the model "
        "never sees them) and turn Ks into a faint limit; then draw the predictive "
        "photometry of every band, observed or not, from the joint model.",
    ),
    (
        "code",
        "seen2 = seen.copy()\n"
        "seen2[[i for i, n in enumerate(names) if n.startswith('wise')]] = False\n"
        "lim2 = np.zeros_like(lim)\n"
        "ks = names.index('2mass_Ks')\n"
        "lim2[ks] = seen2[ks]\n"
        "given = {n: x[i] for i, n in enumerate(names) if seen2[i]}\n"
        "errors = {n: err[i] for i, n in enumerate(names) if seen2[i]}\n"
        "bands = [n for n in names if n != 'parallax']\n"
        "out = post.sample_nodes((NUM_SAMPLES,), given, errors=errors, "
        "upper_limits={'2mass_Ks': bool(lim2[ks])}, "
        "latent=[*post.parameter_names, *bands], seed=1)\n"
        "pred = np.stack([out[n].numpy() for n in bands], axis=1)\n"
        "wave = [pivot_wavelength(n) / 1e4 for n in bands]\n"
        "obs = np.array([x[names.index(n)] if seen2[names.index(n)] else np.nan for n in bands])\n"
        "e = np.array([err[names.index(n)] for n in bands])\n"
        "fig = plots.plot_sed_predictive(wave, pred, obs, e, "
        "np.array([lim2[names.index(n)] for n in bands]), bands)",
    ),
    (
        "code",
        "# the likelihood p(x | θ): fix θ at the truth and sample the photometry\n"
        "fixed = dict(zip(post.parameter_names, truth, strict=True))\n"
        "lik = post.sample_nodes((NUM_SAMPLES,), fixed, latent=bands, seed=2)\n"
        "print({n: round(float(np.median(lik[n].numpy())), 2) for n in bands[:6]})",
    ),
    (
        "code",
        "ev = run_evaluate(from_dict(EvaluateConfig, {'model': f'{OUT}/model', "
        "'data': f'{OUT}/test.h5', 'num_objects': 100 if SMALL else 500, "
        "'num_samples': 100}), f'{OUT}/evaluation', progress=False)\n"
        "Image(filename=str(ev / 'recovery.png'))",
    ),
]
NB3 = [
    (
        "md",
        "# 3. Domain adaptation from simulated to real data\n\n"
        "The truth is known here: the *simulation* renders field stars with CK04 spectra, the "
        "G23 law at R(V) = 3.1 and Gaia DR3 passbands, while the stand-in for *real* data uses "
        "the Kurucz band-flux grid, Gaia DR2 passbands, the F99 law with a hidden R(V) "
        "spread, zero-point offsets and underestimated errors (`dasbi bench domain-adapt`). "
        "A model trained on simulations alone is then misspecified on the real side; the "
        "alignment losses (contrastive C, optimal transport OT, sim-real pairs RS) pull the "
        "real embeddings onto the simulated ones. `RS@rope` is the benchmark's best recipe: "
        "the sim side trains as without alignment; halfway through, a copy of its encoders "
        "becomes the real side and learns, from the pairs, to give each real star the context "
        "tokens of its simulated twin. " + PARAMS_NOTE,
    ),
    (
        "code",
        "import os\n"
        "SMALL = os.environ.get('DASBI_NOTEBOOK_SMALL') == '1'\n"
        "SIZES = ({'num_sims': 1500, 'num_real': 300, 'num_pairs': 60, 'num_test': 80} if SMALL\n"
        "         else {'num_sims': 10000, 'num_real': 2000, 'num_pairs': 300, 'num_test': 300})\n"
        "STEPS = 60 if SMALL else 1000\n"
        "VARIANTS = ['none', 'RS@rope']  # no alignment, and RoPE-style calibration on pairs\n"
        "NUM_SAMPLES = 40 if SMALL else 100\n"
        "OUT = 'runs/notebook3'",
    ),
    (
        "code",
        "%matplotlib inline\n"
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "\n"
        "from dasbi import plots\n"
        "from dasbi.adapt import train_domain_adapt\n"
        "from dasbi.bench.domain_adapt import (\n"
        "    DomainAdaptBenchConfig,\n"
        "    observations,\n"
        "    default_train,\n"
        "    make_domains,\n"
        "    variant_config,\n"
        ")\n"
        "from dasbi.config import from_dict\n"
        "from dasbi.diagnostics import recovery_stats",
    ),
    (
        "code",
        "cfg = from_dict(DomainAdaptBenchConfig, SIZES)\n"
        "made = make_domains(cfg, OUT)\n"
        "_, sim_obs = observations(made['test_sim'])\n"
        "_, real_obs = observations(made['test_real'])\n"
        "fig = plots.plot_cmd(sim_obs['x'], real_obs['x'])\n"
        "fig.axes[0].set_title('the same test stars, simulated and \"real\"')\n"
        "fig = plots.plot_colour_colour(sim_obs['x'], real_obs['x'])",
    ),
    (
        "code",
        "train = default_train()\n"
        "train.update(max_steps=STEPS, val_every=max(50, STEPS // 5))\n"
        "train['align'] = {**train['align'], 'warmup_steps': STEPS // 5}\n"
        "if SMALL:\n"
        "    train['network'] = {'dim': 32, 'depth': 2, 'heads': 2}\n"
        "    train['encoder'] = {'dim': 32, 'depth': 1, 'heads': 2, 'tokens': 2}\n"
        "modes = {'rope': {**cfg.modes['rope'], 'start_step': STEPS // 2}}\n"
        "models = {}\n"
        "for variant in VARIANTS:\n"
        "    da = variant_config(train, variant, cfg.weights, cfg.seed, 2, modes)\n"
        "    pairs = made['pairs'] if 'RS' in variant else None\n"
        "    models[variant], _ = train_domain_adapt(made['sim'], made['real'], da, pairs=pairs, "
        "progress=False)",
    ),
    (
        "code",
        "names = models['none'].parameter_names\n"
        "logs = [n in ('teff', 'radius', 'distance') for n in names]\n"
        "def space(v):\n"
        "    return np.where(logs, np.log10(np.abs(v)), v)\n"
        "truth = space(made['theta_test'])\n"
        "rows = []\n"
        "for variant, post in models.items():\n"
        "    for dom, obs in (('sim', sim_obs), ('real', real_obs)):\n"
        "        z = post.sample((NUM_SAMPLES,), **obs, domain=dom, seed=0).numpy()\n"
        "        rec = recovery_stats(space(z), truth)\n"
        "        nrmse = rec['rmse'] / truth.std(0)\n"
        "        rows.append((variant, dom, *np.round(nrmse, 3)))\n"
        "print(f\"{'variant':>8} {'domain':>6} \" + ' '.join(f'{n:>9}' for n in names))\n"
        "for r in rows:\n"
        "    print(f'{r[0]:>8} {r[1]:>6} ' + ' '.join(f'{v:9.3f}' for v in r[2:]))",
    ),
    (
        "md",
        "Normalised RMSE of the posterior medians (RMSE / σ of the test θ; log10 for Teff, "
        "radius and distance). The gap between the `sim` and `real` rows of `none` is the "
        "misspecification; the DA rows show how much of it the alignment closes.",
    ),
    (
        "code",
        "fig = plots.plot_embeddings(\n"
        "    (models['none'].embed(made['test_sim'], 'sim'), "
        "models['none'].embed(made['test_real'], 'real')),\n"
        "    (models[VARIANTS[-1]].embed(made['test_sim'], 'sim'), "
        "models[VARIANTS[-1]].embed(made['test_real'], 'real')),\n"
        ")",
    ),
]


NB4 = [
    (
        "md",
        "# 4. Posteriors for a real multi-survey YSO catalogue: Corona Australis\n\n"
        "The development set of the real-YSO benchmark (`dasbi bench yso-real`): 193 members "
        "of Corona Australis (Esplin & Luhman 2022) with Gaia DR3 G/BP/RP and parallax, 2MASS, "
        "AllWISE, Spitzer IRAC and MIPS 24, as published: empty cells, errors rounded to 0, "
        "upper limits. We simulate star + passive-disc YSOs of a 1-15 Myr population at the "
        "cloud's distance through the same surveys, train a Simformer, map the catalogue's "
        "columns onto the model's nodes with a column map, run `dasbi infer`, and compare the "
        "posteriors with spectroscopy: T_eff from the spectral type (Herczeg & Hillenbrand "
        "2014 scale) and the published A_V. " + PARAMS_NOTE,
    ),
    (
        "code",
        "import os\n"
        "SMALL = os.environ.get('DASBI_NOTEBOOK_SMALL') == '1'\n"
        "NUM_SIMS = 3000 if SMALL else 20000\n"
        "STEPS = 100 if SMALL else 1500\n"
        "NETWORK = {'dim': 32, 'depth': 2, 'heads': 2} if SMALL else "
        "{'dim': 64, 'depth': 3, 'heads': 4}\n"
        "NUM_SAMPLES = 50 if SMALL else 300\n"
        "MODEL_SET = 'sp--s-i'            # R17: star + passive disc\n"
        "DISTANCE = (150.0, 15.0)         # pc: the cloud, mean and σ of the prior\n"
        "AGES = [1.0, 15.0]               # Myr: the population prior (BHAC15, Kroupa IMF)\n"
        "AV = [0.0, 15.0]                 # A_V prior, mag\n"
        "OUT = 'runs/notebook4'",
    ),
    (
        "code",
        "%matplotlib inline\n"
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "import yaml\n"
        "from astropy.table import Table, join\n"
        "\n"
        "from dasbi.config import from_dict\n"
        "from dasbi.diagnostics import robust_sigma\n"
        "from dasbi.infer import InferConfig, read_posteriors, run_infer\n"
        "from dasbi.simulate import SimulateConfig, run_simulate\n"
        "from dasbi.train import TrainConfig, train\n"
        "from simulators.data import find_data\n"
        "from simulators.surveys import find_survey\n"
        "\n"
        "os.makedirs(OUT, exist_ok=True)",
    ),
    (
        "md",
        "## The catalogue and its column map\n\n"
        "A column map says which column is which node, its error, its upper-limit flag and an "
        "error floor (some published errors are 0.000). `esplin2022_cra` ships with dasbi; "
        "write your own for another table.",
    ),
    (
        "code",
        "members = Table.read(find_data('real/yso/CrA/cra_members_dev.csv'), format='ascii.csv')\n"
        "cmap = yaml.safe_load(open(find_survey('esplin2022_cra')))\n"
        "print(len(members), 'members')\n"
        "for node, spec in list(cmap['catalogue']['columns'].items())[:5]:\n"
        "    print(f'{node:>9}: {spec}')\n"
        "bands = [c for c in ('gaia_g', 'j', 'ks', 'w1', 'irac1', 'w3', 'mips24')]\n"
        "have = [np.isfinite(np.ma.filled(members[c].astype(float), np.nan)).mean()\n"
        "        for c in bands]\n"
        "fig, ax = plt.subplots(figsize=(6, 3))\n"
        "ax.bar(bands, have)\n"
        "ax.set_ylabel('fraction with a value')\n"
        "ax.set_title('what the catalogue has: much is missing')\n"
        "fig.tight_layout()",
    ),
    (
        "md",
        "## Simulate and train\n\n"
        "The `yso` simulator with the surveys the catalogue comes from, non-detections as "
        "upper limits, 30% of the values missing at random (so the model learns to "
        "marginalise), a Gaussian distance prior at the cloud, and the young population "
        "prior: T_eff and radius from BHAC15 isochrones at 1-15 Myr, so the photosphere gets "
        "a pre-main-sequence gravity.",
    ),
    (
        "code",
        "mean, sigma = DISTANCE\n"
        "sim = {'name': 'yso', 'model_set': MODEL_SET, 'library': 'phoenix', "
        "'surveys': ['gaia_dr3', '2mass', 'allwise', 'spitzer_c2d'], 'av': AV, "
        "'distance': [mean - 5 * sigma, mean + 5 * sigma], 'aperture_arcsec': 3.0, "
        "'non_detection': 'upper_limit', 'missing_prob': 0.3, "
        "'population': {'kind': 'young', 'age_myr': AGES}, "
        "'priors': {'distance': {'dist': 'normal', 'mean': mean, 'sigma': sigma, "
        "'low': mean - 5 * sigma, 'high': mean + 5 * sigma}}}\n"
        "data = run_simulate(from_dict(SimulateConfig, {'num': NUM_SIMS, 'seed': 0, "
        "'simulator': sim}), f'{OUT}/sims.h5', overwrite=True, progress=False)\n"
        "cfg = from_dict(TrainConfig, {'network': NETWORK, 'max_steps': STEPS, "
        "'batch_size': 256, 'val_every': max(50, STEPS // 4), 'warmup_steps': 20})\n"
        "result = train(data, cfg, out=f'{OUT}/model', overwrite=True, progress=False)\n"
        "print(result.steps, 'steps')",
    ),
    (
        "md",
        "## `dasbi infer` on the catalogue\n\n"
        "`run_infer` is `dasbi infer --model ... --catalogue ... --survey esplin2022_cra`. "
        "Rows without a usable value would be listed with the reason in `post.rejected.ecsv`.",
    ),
    (
        "code",
        "members.write(f'{OUT}/members.fits', overwrite=True)\n"
        "icfg = from_dict(InferConfig, {'model': f'{OUT}/model', 'catalogue': "
        "f'{OUT}/members.fits', 'survey': 'esplin2022_cra', 'num_samples': NUM_SAMPLES, "
        "'sampler': 'dpm2m', 'sampler_steps': 15})\n"
        "post_path = run_infer(icfg, f'{OUT}/post.h5', overwrite=True, progress=False)\n"
        "summary, attrs = read_posteriors(post_path)\n"
        "summary['name'] = np.char.strip(np.asarray(summary['id'], str))\n"
        "both = join(members, summary, keys='name')\n"
        "print(attrs['n_input'], 'rows in,', len(summary), 'posteriors,', attrs['n_rejected'], "
        "'rejected')",
    ),
    (
        "md",
        "## Posteriors against spectroscopy\n\n"
        "Members K5-M6 (where the spectral-type T_eff scale holds), split into discless "
        "(class III) and disc-bearing stars. The error bars are the 16th-84th percentiles. "
        "A third of the published A_V are exactly 0: the catalogue clips negative estimates, "
        "and no posterior on A_V ≥ 0 can hold such a label inside its interval, so the A_V "
        "figures are also given over the labels above 0.",
    ),
    (
        "code",
        "def col(name):\n"
        "    return np.ma.filled(np.ma.asarray(both[name]).astype(float), np.nan)\n"
        "spt, t_true, av_true = col('spt_num'), col('teff_spt'), col('a_v')\n"
        "sel = (spt >= -5) & (spt <= 6) & np.isfinite(t_true) & np.isfinite(av_true)\n"
        "disc = np.asarray(both['disk_type'].filled('') if hasattr(both['disk_type'], 'filled') "
        "else both['disk_type'], str)\n"
        "iii = np.char.rstrip(disc, '?') == 'III'\n"
        "fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))\n"
        "for ax, (p, truth, unit) in zip(axes, [('star.temperature', t_true, 'K'), "
        "('av', av_true, 'mag')], strict=True):\n"
        "    med, lo, hi = col(f'{p}_median'), col(f'{p}_p16'), col(f'{p}_p84')\n"
        "    for mask, lab, c in ((sel & iii, 'class III', 'C0'), (sel & ~iii, 'disc', 'C3')):\n"
        "        ax.errorbar(truth[mask], med[mask], yerr=[med[mask] - lo[mask], "
        "hi[mask] - med[mask]], fmt='o', ms=3, alpha=0.6, color=c, label=lab)\n"
        "    lim = [np.nanmin(truth[sel]), np.nanmax(truth[sel])]\n"
        "    ax.plot(lim, lim, 'k-', lw=0.8)\n"
        "    d = med[sel] - truth[sel]\n"
        "    inside = np.mean((lo[sel] <= truth[sel]) & (truth[sel] <= hi[sel]))\n"
        "    ax.set_title(f'bias {np.median(d):+.3g} {unit}, robust σ {robust_sigma(d):.3g} '\n"
        "                 f'{unit}, {inside:.0%} inside p16-p84', fontsize=10)\n"
        "    ax.set_xlabel(f'spectroscopic {p} ({unit})')\n"
        "    ax.set_ylabel(f'posterior median ({unit})')\n"
        "    ax.legend()\n"
        "fig.tight_layout()\n"
        "pos = sel & (av_true > 0)\n"
        "d = col('av_median')[pos] - av_true[pos]\n"
        "inside = np.mean((col('av_p16')[pos] <= av_true[pos])\n"
        "                 & (av_true[pos] <= col('av_p84')[pos]))\n"
        "print(f'{np.mean(av_true[sel] == 0):.0%} of the K5-M6 A_V labels are 0; '\n"
        "      f'over the others: bias {np.median(d):+.2f} mag, '\n"
        "      f'robust σ {robust_sigma(d):.2f} mag, {inside:.0%} inside')",
    ),
    (
        "md",
        "## Calibration\n\n"
        "If the posteriors were calibrated, the fraction of spectroscopic values inside the "
        "central x% interval would be x for every x. Below the diagonal: overconfident.",
    ),
    (
        "code",
        "levels = np.array([0.16, 0.5, 0.68])\n"
        "fig, ax = plt.subplots(figsize=(4.6, 4.2))\n"
        "z = {'star.temperature': t_true, 'av': av_true}\n"
        "for p, truth in z.items():\n"
        "    lo, med, hi = col(f'{p}_p16'), col(f'{p}_median'), col(f'{p}_p84')\n"
        "    # the central 68% interval is stored; narrower ones scale it about the median\n"
        "    frac = [np.mean((med[sel] - (med[sel] - lo[sel]) * q / 0.68 <= truth[sel]) & "
        "(truth[sel] <= med[sel] + (hi[sel] - med[sel]) * q / 0.68)) for q in levels]\n"
        "    ax.plot(levels, frac, 'o-', label=p)\n"
        "ax.plot([0, 0.7], [0, 0.7], 'k--', lw=0.8)\n"
        "ax.set_xlabel('nominal interval (approx.)')\n"
        "ax.set_ylabel('fraction of labels inside')\n"
        "ax.legend()\n"
        "fig.tight_layout()",
    ),
    (
        "md",
        "What to take from it: with PHOENIX photospheres and the young population prior, "
        "T_eff tracks the spectral types, but it sits above the Herczeg & Hillenbrand scale, "
        "and A_V above the published values. `dasbi bench photospheres` shows why: at their "
        "spectral-type T_eff, real young M stars are brighter in RP and G and fainter in "
        "W1/W2 than PHOENIX relative to J/H/Ks, but not in BP, and the data's best compromise "
        "is a hotter, more reddened star (docs/benchmarks.md). The full benchmark with "
        "simulated-test recovery beside these figures is `dasbi bench yso-real`.",
    ),
    (
        "code",
        "keep = ['name', 'spt', 'teff_spt', 'a_v', 'disk_type'] + [c for c in both.colnames "
        "if c.endswith(('_median', '_p16', '_p84'))] + ['n_observed', 'flags']\n"
        "both[keep].write(f'{OUT}/cra_posteriors.ecsv', overwrite=True)\n"
        "both[keep][:5]",
    ),
]


NB5 = [
    (
        "md",
        "# 5. Galaxia mock catalogues through dasbi\n\n"
        "The `galaxia` simulator takes the stars of a Galaxia mock (an EBF file from Galaxia, "
        "or the HDF5 that galaxia-ananke / ananke write) and observes them exactly as "
        "`field_stars` observes the embedded Milky Way: each star's initial mass, age and "
        "[Fe/H] through the same isochrones, its E(B-V) times its own R(V), the same "
        "atmospheres, surveys, magnitude limit and missing values. The dataset has the same "
        "nodes, so a model trained on one can be tested on the other.\n\n"
        "Set `GALAXIA_FILE` (or the environment variable `DASBI_GALAXIA_FILE`) to your mock. "
        "Without one, the notebook writes a **stand-in**: the embedded Milky Way's stars of the "
        "same cone in Galaxia's EBF format. The stand-in and `field_stars` then agree by "
        "construction; with a real Galaxia mock, the differences below are the differences "
        "between the two Galactic models. " + PARAMS_NOTE,
    ),
    (
        "code",
        "import os\n"
        "SMALL = os.environ.get('DASBI_NOTEBOOK_SMALL') == '1'\n"
        "GALAXIA_FILE = os.environ.get('DASBI_GALAXIA_FILE')  # None: write the stand-in\n"
        "CONE = {'l': 60.0, 'b': 20.0, 'radius': 1.0}         # deg\n"
        "MAG_LIMIT = 18.0                                     # Gaia G\n"
        "NUM_STAND_IN = 20000 if SMALL else 200000            # stars in the stand-in mock\n"
        "NUM_FIELD = 2000 if SMALL else 20000                 # field_stars draws to compare\n"
        "OUT = 'runs/notebook5'",
    ),
    (
        "code",
        "%matplotlib inline\n"
        "import ebf\n"
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "import torch\n"
        "from sbi.utils.metrics import c2st\n"
        "\n"
        "from dasbi.config import from_dict\n"
        "from dasbi.dataset import Dataset\n"
        "from dasbi.simulate import SimulateConfig, run_simulate\n"
        "from simulators.galaxia import GalaxiaStars, read_galaxia\n"
        "from simulators.stars import FieldStars\n"
        "\n"
        "os.makedirs(OUT, exist_ok=True)\n"
        "FIELD = {'library': 'phoenix', 'surveys': ['gaia_dr3', '2mass'], 'mag_limit': MAG_LIMIT, "
        "**CONE}",
    ),
    (
        "code",
        "if GALAXIA_FILE is None:  # the stand-in: the embedded model's stars, Galaxia's format\n"
        "    fs = FieldStars(FIELD)\n"
        "    pop = fs._population(NUM_STAND_IN, np.random.default_rng(0))\n"
        "    pop['feh'] = np.clip(pop['feh'], *fs.iso.bounds['feh'])\n"
        "    props = fs.iso.interpolate(pop['mass'], pop['log_age'], pop['feh'])\n"
        "    ok = np.isfinite(props['teff']) & np.isfinite(props['radius'])\n"
        "    av = fs.dust.av(pop['l'], pop['b'], pop['distance'])\n"
        "    lum = props['radius'] ** 2 * (props['teff'] / 5772.0) ** 4\n"
        "    cols = {'teff': np.log10(props['teff']), 'grav': props['logg'], "
        "'lum': np.log10(lum), "
        "'feh': pop['feh'], 'rad': pop['distance'] / 1000, 'age': pop['log_age'], "
        "'smass': pop['mass'], 'mact': pop['mass'], 'glon': pop['l'], 'glat': pop['b'], "
        "'exbv_solar': av / 3.1}\n"
        "    GALAXIA_FILE = f'{OUT}/stand_in.ebf'\n"
        "    for i, (k, v) in enumerate(cols.items()):\n"
        "        ebf.write(GALAXIA_FILE, f'/{k}', np.asarray(v)[ok], 'w' if i == 0 else 'a')\n"
        "stars = read_galaxia(GALAXIA_FILE)\n"
        "print(len(stars['teff']), 'stars in', GALAXIA_FILE, '; columns:', sorted(stars))",
    ),
    (
        "code",
        "fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))\n"
        "axes[0].hist(stars['distance'] / 1000, bins=60)\n"
        "axes[0].set_xlabel('distance (kpc)')\n"
        "axes[1].hist(10 ** (stars['log_age'] - 9), bins=60)\n"
        "axes[1].set_xlabel('age (Gyr)')\n"
        "axes[2].hist(np.log10(stars.get('mass_initial', stars['mass'])), bins=60)\n"
        "axes[2].set_xlabel('log10 initial mass (M_sun)')\n"
        "fig.suptitle('the mock catalogue, as read')\n"
        "fig.tight_layout()",
    ),
    (
        "md",
        "## Observe the mock as field_stars observes its own stars\n\n"
        "`catalogue()` observes every star of the mock once (stars off the isochrones or the "
        "library, and those fainter than the G limit, drop out); `field_stars` draws its own "
        "stars from the embedded model in the same cone.",
    ),
    (
        "code",
        "gs = GalaxiaStars({**FIELD, 'source': GALAXIA_FILE})\n"
        "mock = gs.catalogue(np.random.default_rng(1))\n"
        "fs = FieldStars(FIELD)\n"
        "own = fs(NUM_FIELD, np.random.default_rng(2))\n"
        "bands = fs.bands\n"
        "def observables(values):\n"
        "    g, bp, rp = (values[:, bands.index(b)] for b in ('gaia_G', 'gaia_BP', 'gaia_RP'))\n"
        "    j, ks = values[:, bands.index('2mass_J')], values[:, bands.index('2mass_Ks')]\n"
        "    return np.stack([g, bp - rp, j - ks], axis=1)\n"
        "x_mock = observables(np.stack([np.asarray(mock[b]) for b in bands], axis=1))\n"
        "x_own = observables(own.x['photometry'].values)\n"
        "av_mock = np.asarray(mock['true_av'])\n"
        "av_own = own.theta[:, fs.theta_names.index('av')]\n"
        "print(len(mock), 'mock stars brighter than G =', MAG_LIMIT)",
    ),
    (
        "code",
        "fig, axes = plt.subplots(1, 3, figsize=(13, 4))\n"
        "for x, lab in ((x_own, 'field_stars'), (x_mock, 'galaxia')):\n"
        "    ok = np.isfinite(x).all(axis=1)\n"
        "    axes[0].scatter(x[ok, 1], x[ok, 0], s=1, alpha=0.3, label=lab)\n"
        "    axes[1].hist(x[np.isfinite(x[:, 0]), 0], bins=40, histtype='step', density=True, "
        "label=lab)\n"
        "axes[2].hist(av_own, bins=40, histtype='step', density=True, label='field_stars')\n"
        "axes[2].hist(av_mock, bins=40, histtype='step', density=True, label='galaxia')\n"
        "axes[0].invert_yaxis()\n"
        "axes[0].set(xlabel='BP - RP', ylabel='G', title='CMD')\n"
        "axes[1].set(xlabel='G', ylabel='density', title='number counts (normalised)')\n"
        "axes[2].set(xlabel='A_V (mag)', title='extinction')\n"
        "for ax in axes:\n"
        "    ax.legend(markerscale=8)\n"
        "fig.tight_layout()",
    ),
    (
        "code",
        "# a classifier two-sample test (sbi's C2ST) on G, BP-RP and J-Ks: 0.5 = alike\n"
        "a, b = (x[np.isfinite(x).all(axis=1)] for x in (x_own, x_mock))\n"
        "n = min(len(a), len(b), 5000)\n"
        "rng = np.random.default_rng(3)\n"
        "a, b = a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]\n"
        "score = float(c2st(torch.tensor(a, dtype=torch.float32), "
        "torch.tensor(b, dtype=torch.float32)))\n"
        "print(f'C2ST field_stars vs galaxia on {n} stars each: {score:.3f}')",
    ),
    (
        "md",
        "## A dataset for training or testing\n\n"
        "`dasbi simulate --set simulator.name=galaxia --set simulator.source=FILE` does this "
        "from the command line: rows are stars drawn at random from the mock.",
    ),
    (
        "code",
        "nodes = {}\n"
        "for name in ('galaxia', 'field_stars'):\n"
        "    sim = {**FIELD, 'name': name, **({'source': GALAXIA_FILE} if name == 'galaxia' "
        "else {})}\n"
        "    cfg = from_dict(SimulateConfig, {'num': 2000, 'seed': 4, 'simulator': sim})\n"
        "    with Dataset(run_simulate(cfg, f'{OUT}/{name}.h5', overwrite=True, "
        "progress=False)) as ds:\n"
        "        nodes[name] = ds.nodes.to_json()\n"
        "        print(name, ds.num_rows, 'rows')\n"
        "print('the same nodes:', nodes['galaxia'] == nodes['field_stars'])",
    ),
]


def build(cells: list[tuple[str, str]], path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        for kind, src in cells
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


NOTEBOOKS = {
    "01_simulate_populations.ipynb": NB1,
    "02_train_and_sample.ipynb": NB2,
    "03_domain_adaptation.ipynb": NB3,
    "04_real_yso_catalogue.ipynb": NB4,
    "05_galaxia_mock.ipynb": NB5,
}


def execute(path: Path, workdir: Path) -> None:
    """Run a notebook at its full settings (in ``workdir``, where it writes its runs/) and
    store it with its outputs, so that a reader sees the results without running it."""
    import os
    import time

    from nbclient import NotebookClient

    if os.environ.get("DASBI_NOTEBOOK_SMALL") == "1":
        raise SystemExit("unset DASBI_NOTEBOOK_SMALL: stored notebooks show the full settings")
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    NotebookClient(
        nb, timeout=7200, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    nb.metadata["dasbi"] = {"executed": "full settings", "wall_s": round(time.time() - t0)}
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--execute",
        nargs="*",
        metavar="NOTEBOOK",
        help="also run these notebooks (default: all) at full settings and store the outputs",
    )
    ap.add_argument("--workdir", default="runs/notebooks", help="where the notebooks run")
    args = ap.parse_args()
    for name, cells in NOTEBOOKS.items():
        if args.execute is None or not args.execute or name in args.execute:
            build(cells, HERE / name)
    if args.execute is not None:
        for name in args.execute or list(NOTEBOOKS):
            execute(HERE / name, Path(args.workdir).resolve())
            print("executed", name)
