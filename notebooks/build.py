"""Writes the notebooks from their cell sources (outputs stripped): `python notebooks/build.py`.

Keeping the sources here makes them reviewable as code; `tests/test_notebooks.py` executes
the .ipynb files top to bottom with the small settings (DASBI_NOTEBOOK_SMALL=1).
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
        "CK04 atmospheres, G23 dust) and a YSO population with R17-style SEDs, both observed "
        "through Gaia, 2MASS, WISE and Spitzer with survey depths, noise and missing values. "
        + PARAMS_NOTE,
    ),
    (
        "code",
        "import os\n"
        "SMALL = os.environ.get('DASBI_NOTEBOOK_SMALL') == '1'\n"
        "NUM_STARS = 3000 if SMALL else 50000      # field stars\n"
        "NUM_YSO = 600 if SMALL else 5000          # YSOs\n"
        "LIBRARY = 'planck' if SMALL else 'ck04'   # stellar atmospheres\n"
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
        "marginalised and upper limits respected. " + PARAMS_NOTE,
    ),
    (
        "code",
        "import os\n"
        "SMALL = os.environ.get('DASBI_NOTEBOOK_SMALL') == '1'\n"
        "NUM_SIMS = 4000 if SMALL else 200000\n"
        "STEPS = 150 if SMALL else 20000\n"
        "NETWORK = {'dim': 32, 'depth': 2, 'heads': 2} if SMALL else "
        "{'dim': 128, 'depth': 6, 'heads': 4}\n"
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
        "sim = {'name': 'field_stars', 'library': 'planck', "
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
        "         else {'num_sims': 20000, 'num_real': 4000, 'num_pairs': 300, 'num_test': 300})\n"
        "STEPS = 60 if SMALL else 2000\n"
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
        "# 4. Posteriors for the real NGC 1333 and IC 348 YSO catalogue\n\n"
        "The members of Luhman, Esplin & Loutrel (2016) with 2MASS/UKIDSS J, H, Ks: train a "
        "Simformer on R17-style star + passive-disc SEDs at the clusters' distance, run "
        "`dasbi infer` on the AAS machine-readable tables through the `luhman2016` column "
        "map, then compare the posterior Teff with the spectral-type Teff and A_V with the "
        "published A_J, map the posteriors on the sky, and write the posterior table. "
        + PARAMS_NOTE,
    ),
    (
        "code",
        "import os\n"
        "SMALL = os.environ.get('DASBI_NOTEBOOK_SMALL') == '1'\n"
        "NUM_SIMS = 3000 if SMALL else 50000\n"
        "STEPS = 100 if SMALL else 15000\n"
        "NETWORK = {'dim': 32, 'depth': 2, 'heads': 2} if SMALL else "
        "{'dim': 96, 'depth': 4, 'heads': 4}\n"
        "NUM_SAMPLES = 50 if SMALL else 500\n"
        "MODEL_SET = 'sp--s-i'          # R17: star + passive disc\n"
        "DISTANCE = [270.0, 340.0]      # pc: IC 348 and NGC 1333\n"
        "AV = [0.0, 15.0]               # A_V prior, mag\n"
        "OUT = 'runs/notebook4'",
    ),
    (
        "code",
        "%matplotlib inline\n"
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "from astropy import units as u\n"
        "from astropy.coordinates import SkyCoord\n"
        "from astropy.table import Table, join, vstack\n"
        "\n"
        "from dasbi.bench.luhman import spectral_type_teff\n"
        "from dasbi.config import from_dict\n"
        "from dasbi.diagnostics import robust_sigma\n"
        "from dasbi.infer import InferConfig, read_posteriors, run_infer\n"
        "from dasbi.simulate import SimulateConfig, run_simulate\n"
        "from dasbi.train import TrainConfig, train\n"
        "from simulators.bandpasses import pivot_wavelength\n"
        "from simulators.data import find_data\n"
        "from simulators.dust import ExtinctionCurve\n"
        "\n"
        "os.makedirs(OUT, exist_ok=True)",
    ),
    (
        "code",
        "tables = ['IC348/Luhman2016_Table1_apjaa2cabt1_mrt.txt', "
        "'NGC1333/Luhman2016_Table2_apjaa2cabt1_mrt.txt']\n"
        "parts = []\n"
        "for rel in tables:\n"
        "    t = Table.read(find_data(f'real/yso/{rel}'), format='ascii.mrt')\n"
        "    t['cluster'] = rel.split('/')[0]\n"
        "    parts.append(t)\n"
        "members = vstack(parts)\n"
        "sign = np.where(members['DE-'] == '-', -1, 1)\n"
        "col = lambda name: np.asarray(members[name], float)  # noqa: E731 (plain numbers)\n"
        "members['ra'] = 15 * (col('RAh') + col('RAm') / 60 + col('RAs') / 3600)\n"
        "members['dec'] = sign * (col('DEd') + col('DEm') / 60 + col('DEs') / 3600)\n"
        "members['teff_spt'] = spectral_type_teff(np.asarray(members['Adopt'], str))\n"
        "members.write(f'{OUT}/members.fits', overwrite=True)\n"
        "print(len(members), 'members;', int(np.isfinite(members['teff_spt']).sum()), "
        "'with K5-M9 spectral types')",
    ),
    (
        "code",
        "sim = {'name': 'yso', 'model_set': MODEL_SET, 'library': 'planck', 'surveys': [], "
        "'bands': {'2mass_J': {}, '2mass_H': {}, '2mass_Ks': {}}, 'distance': DISTANCE, "
        "'av': AV, 'aperture_arcsec': 3.0, 'parallax': False}\n"
        "data = run_simulate(from_dict(SimulateConfig, {'num': NUM_SIMS, 'seed': 0, "
        "'simulator': sim}), f'{OUT}/sims.h5', overwrite=True, progress=False)\n"
        "cfg = from_dict(TrainConfig, {'network': NETWORK, 'max_steps': STEPS, "
        "'batch_size': 256, 'val_every': max(50, STEPS // 10), 'warmup_steps': 20})\n"
        "result = train(data, cfg, out=f'{OUT}/model', overwrite=True, progress=False)\n"
        "print(result.steps, 'steps')",
    ),
    (
        "md",
        "`run_infer` is `dasbi infer`: the column map `configs/surveys/luhman2016.yaml` "
        "turns the J, H, Ks columns into the model's nodes; rows without a usable value are "
        "listed in `post.rejected.ecsv`.",
    ),
    (
        "code",
        "icfg = from_dict(InferConfig, {'model': f'{OUT}/model', 'catalogue': "
        "f'{OUT}/members.fits', 'survey': 'luhman2016', 'num_samples': NUM_SAMPLES, "
        "'sampler': 'dpm2m', 'sampler_steps': 15})\n"
        "post_path = run_infer(icfg, f'{OUT}/post.h5', overwrite=True, progress=False)\n"
        "summary, attrs = read_posteriors(post_path)\n"
        "summary['id'] = np.char.strip(np.asarray(summary['id'], str))\n"
        "members['id'] = np.char.strip(np.asarray(members['Name'], str))\n"
        "both = join(members, summary, keys='id')\n"
        "print(attrs['n_input'], 'rows in,', len(summary), 'posteriors,', attrs['n_rejected'], "
        "'rejected')",
    ),
    (
        "code",
        "a_j = float(np.ravel(ExtinctionCurve('G23', "
        "np.array([pivot_wavelength('2mass_J')])).a_over_av(3.1))[0])\n"
        "teff, spt = both['star.temperature_median'], both['teff_spt']\n"
        "av, av_lit = both['av_median'], both['Aj'].filled(np.nan) / a_j\n"
        "fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))\n"
        "pairs = [(teff, spt, 'Teff (K)'), (av, av_lit, 'A_V (mag)')]\n"
        "for ax, (mod, lit, lab) in zip(axes, pairs, strict=True):\n"
        "    ok = np.isfinite(lit) & np.isfinite(mod)\n"
        "    ic348 = both['cluster'][ok] == 'IC348'\n"
        "    ax.scatter(lit[ok], mod[ok], s=6, c=ic348, cmap='coolwarm')\n"
        "    lim = [np.nanmin(lit[ok]), np.nanmax(lit[ok])]\n"
        "    ax.plot(lim, lim, 'k-', lw=0.8)\n"
        "    d = (np.log10(mod[ok] / lit[ok]) if lab.startswith('Teff') else mod[ok] - lit[ok])\n"
        "    ax.set_title(f'bias {np.median(d):+.3g}, robust σ {robust_sigma(d):.3g}' "
        "+ (' dex' if lab.startswith('Teff') else ' mag'))\n"
        "    ax.set_xlabel(f'literature {lab}')\n"
        "    ax.set_ylabel(f'posterior median {lab}')\n"
        "fig.tight_layout()",
    ),
    (
        "code",
        "fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))\n"
        "for ax, name in zip(axes, ['IC348', 'NGC1333'], strict=True):\n"
        "    sel = both['cluster'] == name\n"
        "    c = SkyCoord(both['ra'][sel] * u.deg, both['dec'][sel] * u.deg)\n"
        "    colour = both['av_median'][sel]\n"
        "    sc = ax.scatter(c.ra.deg, c.dec.deg, c=colour, s=10, cmap='magma_r')\n"
        "    ax.invert_xaxis()\n"
        "    ax.set_xlabel('RA (deg)')\n"
        "    ax.set_ylabel('Dec (deg)')\n"
        "    ax.set_title(f'{name}: posterior median A_V')\n"
        "    fig.colorbar(sc, ax=ax, label='A_V (mag)')\n"
        "fig.tight_layout()",
    ),
    (
        "code",
        "keep = ['id', 'cluster', 'ra', 'dec', 'teff_spt', 'Aj'] + [c for c in both.colnames "
        "if c.endswith(('_median', '_p16', '_p84'))] + ['n_observed', 'flags']\n"
        "both[keep].write(f'{OUT}/ngc1333_ic348_posteriors.ecsv', overwrite=True)\n"
        "both[keep][:5]",
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


if __name__ == "__main__":
    build(NB1, HERE / "01_simulate_populations.ipynb")
    build(NB2, HERE / "02_train_and_sample.ipynb")
    build(NB3, HERE / "03_domain_adaptation.ipynb")
    build(NB4, HERE / "04_real_yso_catalogue.ipynb")
