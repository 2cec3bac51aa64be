"""Customer lifetime value: BG/NBD purchase frequency and Gamma-Gamma spend (pymc-marketing), on net revenue.

The data a fit sees, per customer with at least one sale line before the cutoff (exact rules in
docs/DATA_CONTRACT.md §9.4 and docs/ML.md):
- a *purchase* is a day with at least one sale line of the customer (`silver.sales`); several invoices on
  one day are one purchase, as in the BG/NBD literature's summaries, and returns are never purchases;
- `frequency` = purchase days - 1, `recency` = last - first purchase day, `T` = cutoff - first purchase
  day (days; the cutoff is exclusive, so T >= 1);
- *net value* = sale revenue + return revenue (`silver.returns`, negative) of the customer before the
  cutoff; a return cannot be tied to the invoice it undoes (the UCI file has no such key), so returns are
  netted per customer, and `monetary_value` = net value / purchase days.
- Gamma-Gamma needs a positive spend: it is fit on customers with a repeat purchase and net value > 0.
  A customer whose returns reach or exceed purchases (net value <= 0, usually returns of goods bought
  before the data start) keeps its BG/NBD expected purchases, but its spend is not evidence: its expected
  spend per purchase is the population mean (the Gamma-Gamma prediction with no observed transactions),
  and `spend_basis` says so.

Fitting: a Laplace approximation (the posterior mode in the model's unconstrained space, with the
Jacobian, and the Gaussian of its Hessian there) gives `draws` parameter draws in a few seconds; NUTS
(`fit_method="mcmc"`) is the reference and gives the same totals (docs/ML.md). Intervals are the 10th and
90th percentiles over the parameter draws: the uncertainty of the *expected* purchases and value, not the
spread of what one customer will actually do.

The model is stored as the two fits' InferenceData (netCDF, no pickle), logged to MLflow as a pyfunc
whose loader is this module (`_load_pyfunc`).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# Horizons of gold.customer_clv: months as whole days (3, 6 and 12 months of 365.25 / 12 days, rounded).
HORIZONS: dict[str, int] = {"3m": 91, "6m": 183, "12m": 365}
# Calibration-frequency buckets of the holdout check (repeat purchase days before the split).
BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3-4", 3, 4), ("5-9", 5, 9), ("10+", 10, None))
INPUTS = ("silver.sales", "silver.returns")
_FILES = {"bgnbd": "bgnbd.nc", "gamma_gamma": "gamma_gamma.nc"}

# One row per customer and purchase day before the cutoff (exclusive), and the customer's returns
# before it: the transactions every fit and every scoring read. The cutoff is a bound parameter.
_PURCHASE_DAYS_SQL = """
SELECT customer_id, invoice_date, sum(line_revenue) AS gross
FROM silver.sales
WHERE customer_id IS NOT NULL AND invoice_date < ?
GROUP BY customer_id, invoice_date
"""
_RETURNS_SQL = """
SELECT customer_id, invoice_date, sum(line_revenue) AS returns_value
FROM silver.returns
WHERE customer_id IS NOT NULL AND invoice_date < ?
GROUP BY customer_id, invoice_date
"""
_SPAN_SQL = "SELECT min(invoice_date) AS first_day, max(invoice_date) AS last_day FROM silver.sales"


def sales_span(engine) -> tuple[date | None, date | None]:
    """First and last invoice date of `silver.sales` (engine has it bound)."""
    row = engine.table(_SPAN_SQL).to_pylist()[0]
    return row["first_day"], row["last_day"]


def read_transactions(engine, cutoff: date, *, with_returns: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Purchase days and return days (per customer and invoice date) strictly before `cutoff` (the engine has
    the inputs bound)."""
    days = engine.table(_PURCHASE_DAYS_SQL, [cutoff]).to_pandas()
    returns = (engine.table(_RETURNS_SQL, [cutoff]).to_pandas() if with_returns
               else pd.DataFrame({"customer_id": pd.Series(dtype="int64"), "invoice_date": pd.Series(dtype=object),
                                  "returns_value": pd.Series(dtype=float)}))
    return days, returns


def summarise(days: pd.DataFrame, returns: pd.DataFrame, cutoff: date) -> pd.DataFrame:
    """One row per customer with a purchase day before `cutoff`: the model inputs (see the module doc).

    Columns: customer_id, frequency, recency, T, purchase_days, gross_value, returns_value, net_value,
    monetary_value (net value per purchase day), spend_basis (`own` or `population`).
    """
    days = days[pd.to_datetime(days["invoice_date"]).dt.date < cutoff]
    returns = returns[pd.to_datetime(returns["invoice_date"]).dt.date < cutoff]
    day = pd.to_datetime(days["invoice_date"])
    grouped = days.assign(day=day).groupby("customer_id")
    first, last = grouped["day"].min(), grouped["day"].max()
    out = pd.DataFrame({
        "purchase_days": grouped["day"].nunique().astype("int64"),
        "recency": (last - first).dt.days.astype(float),
        "T": (pd.Timestamp(cutoff) - first).dt.days.astype(float),
        "gross_value": grouped["gross"].sum().astype(float),
    })
    out["frequency"] = (out["purchase_days"] - 1).astype(float)
    returned = returns.groupby("customer_id")["returns_value"].sum() if len(returns) else pd.Series(dtype=float)
    out["returns_value"] = returned.reindex(out.index).fillna(0.0).astype(float)
    out["net_value"] = out["gross_value"] + out["returns_value"]
    out["monetary_value"] = out["net_value"] / out["purchase_days"]
    out["spend_basis"] = np.where(out["net_value"] > 0, "own", "population")
    out = out.reset_index().sort_values("customer_id", kind="stable").reset_index(drop=True)
    return out.loc[:, ["customer_id", "frequency", "recency", "T", "purchase_days", "gross_value", "returns_value",
                       "net_value", "monetary_value", "spend_basis"]]


def gamma_gamma_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The Gamma-Gamma fit's customers: a repeat purchase and a positive net value.

    Its `frequency` is the number of purchase days the mean net value is taken over (returns cannot be
    tied to an invoice, so the first purchase is not left out as in the repeat-only convention).
    """
    rows = summary[(summary["frequency"] > 0) & (summary["net_value"] > 0)]
    return pd.DataFrame({"customer_id": rows["customer_id"].to_numpy(),
                         "monetary_value": rows["monetary_value"].to_numpy(),
                         "frequency": rows["purchase_days"].to_numpy().astype(float)})


# -- fitting ------------------------------------------------------------------------------------------

class ClvFitError(ValueError):
    """The data cannot support the fit (too few customers, no usable posterior mode or spend): the
    training is skipped for want of data. Any other error is a failure, not a skip."""


def _laplace(model, *, draws: int, seed: int) -> dict[str, np.ndarray]:
    """Laplace approximation of a PyMC model's posterior: `draws` draws of its free variables.

    The mode is found in the unconstrained space *with* the Jacobian of the transforms: without it (as
    `pm.find_MAP` does) BG/NBD's dropout parameter `a` runs to its boundary (1e-22 on the UCI file) where
    no Gaussian fits. The Hessian there is the central difference of PyTensor's exact gradient (2 x 4
    gradients): PyTensor's symbolic Hessian over every customer's term took 15 s to compile per model.

    The functions are PyTensor's default ones: rewritten (stabilised) and compiled to C, which PyTensor
    caches in its compile folder, so only the first fit on a machine pays the compiler. Its `FAST_COMPILE`
    mode, used before, skips both, but evaluates a product of more than two terms one element at a time in
    Python: on the demo's 4,355 customers the two fits took 10.0-11.6 s, against 6.3 s compiled (the first
    time on a machine, compiling, 41.6 s; bench/RESULTS.md). It also left expressions unstabilised
    (Gamma-Gamma on a dozen customers ran to NaN). The log density and its gradient are one function (the
    demo's training: 6.1-6.5 against 7.4-8.4 CPU seconds with two).
    """
    from pymc.blocking import DictToArrayBijection, RaveledVars
    from scipy import optimize

    raveled = DictToArrayBijection.map(model.initial_point())
    info = raveled.point_map_info
    # Log density and gradient as one function: one graph to rewrite (most of a fit's time) where two
    # separate functions rewrote the shared terms twice
    logp_dlogp = model.compile_fn([model.logp(jacobian=True), model.dlogp(jacobian=True)],
                                  inputs=model.value_vars, on_unused_input="ignore")

    def point(x: np.ndarray) -> dict[str, np.ndarray]:
        return DictToArrayBijection.rmap(RaveledVars(x, info))

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = logp_dlogp(point(x))
        return -float(value), -np.asarray(gradient, dtype=float)

    found = optimize.minimize(negative, raveled.data, jac=True, method="BFGS",
                              options={"maxiter": 2000, "gtol": 1e-6})
    if not (np.isfinite(found.fun) and np.isfinite(found.x).all()):
        raise ClvFitError(f"the posterior mode was not found ({found.message})")
    precision = _precision(lambda x: negative(x)[1], found.x)
    try:
        if not np.isfinite(precision).all():
            raise np.linalg.LinAlgError("non-finite Hessian")
        covariance = np.linalg.inv(precision)
        np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError as exc:
        raise ClvFitError(f"the posterior mode has no usable curvature ({found.message})") from exc
    rng = np.random.default_rng(seed)
    unconstrained = rng.multivariate_normal(found.x, covariance, size=draws)
    # Back to the model's variables (deterministics such as BG/NBD's a and b included).
    names = [rv.name for rv in model.free_RVs + model.deterministics]
    outputs = model.replace_rvs_by_values([model[name] for name in names])
    fn = model.compile_fn(outputs, inputs=model.value_vars, on_unused_input="ignore", point_fn=True)
    values = [fn(point(x)) for x in unconstrained]
    samples = {name: np.array([v[i] for v in values]) for i, name in enumerate(names)}
    if not all(np.isfinite(v).all() for v in samples.values()):
        raise ClvFitError("non-finite parameter draws")
    return samples


def _precision(gradient, x: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """The Hessian of the negative log posterior at `x` by central differences of its exact gradient."""
    columns = []
    for i in range(len(x)):
        h = np.zeros_like(x)
        h[i] = step * max(1.0, abs(x[i]))
        columns.append((gradient(x + h) - gradient(x - h)) / (2 * h[i]))
    hessian = np.array(columns)
    return (hessian + hessian.T) / 2


def _fit_one(model, data: pd.DataFrame, *, method: str, draws: int, seed: int):
    """Fit a pymc-marketing CLV model on `data` with `method` (`laplace` or `mcmc`); returns the model."""
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymc-marketing's deprecation notices about its own API
        if method == "mcmc":
            model.fit(data, method="mcmc", chains=2, draws=draws, tune=draws, random_seed=seed, cores=1,
                      progressbar=False)
            return model
        model.build_model(data)
        samples = _laplace(model.model, draws=draws, seed=seed)
        posterior = {name: values[None, ...] for name, values in samples.items() if values.ndim == 1}
        model.idata = az.from_dict(posterior=posterior)
        model.set_idata_attrs(model.idata)
        model._add_fit_data_group(model.data)
    return model


@dataclass
class CLVFit:
    """A fitted pair: BG/NBD (purchases) and Gamma-Gamma (net spend per purchase), with their draws."""

    bgnbd: Any
    gamma_gamma: Any
    cutoff: date
    customers: int
    spend_customers: int

    def parameters(self) -> dict[str, float]:
        """Posterior means of the model parameters (logged to MLflow)."""
        out = {}
        for prefix, model, names in (("bgnbd", self.bgnbd, ("r", "alpha", "a", "b")),
                                     ("gamma_gamma", self.gamma_gamma, ("p", "q", "v"))):
            posterior = model.idata.posterior
            out.update({f"{prefix}.{n}": float(posterior[n].mean()) for n in names if n in posterior})
        return out

    def get_raw_model(self) -> CLVFit:
        """MLflow's pyfunc wrapper hands this object back (`Tracker.load_champion`)."""
        return self

    def predict(self, summary: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """The pyfunc entry point: `predict` on a `summarise` frame with 80 % intervals."""
        return predict(self, summary, interval=0.8)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.bgnbd.save(str(directory / _FILES["bgnbd"]))
        self.gamma_gamma.save(str(directory / _FILES["gamma_gamma"]))
        (directory / "cutoff.txt").write_text(f"{self.cutoff.isoformat()} {self.customers} {self.spend_customers}\n")


def load(directory: str | Path) -> CLVFit:
    """A `CLVFit` saved by `CLVFit.save` (netCDF InferenceData, read into memory)."""
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel
    from pymc_marketing.utils import from_netcdf

    directory = Path(directory)
    fits: list[Any] = []
    for kind, name in ((BetaGeoModel, "bgnbd"), (GammaGammaModel, "gamma_gamma")):
        idata = from_netcdf(directory / _FILES[name])
        for group in idata.groups():
            getattr(idata, group).load()  # into memory: the files live in a temporary download
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # `Model.load` of 0.19.2 returns an instance whose PyMC model is not built (its
            # `load_from_idata` discards what `build_from_idata` returns); this is the built one.
            fits.append(kind.build_from_idata(idata))
    bgnbd, gamma_gamma = fits
    cutoff, customers, spend = (directory / "cutoff.txt").read_text().split()
    return CLVFit(bgnbd, gamma_gamma, date.fromisoformat(cutoff), int(customers), int(spend))


def _load_pyfunc(data_path: str) -> CLVFit:
    """MLflow's pyfunc loader (`loader_module`): the registered artifact back as a `CLVFit`."""
    return load(data_path)


def fit(summary: pd.DataFrame, cutoff: date, *, method: str, draws: int, seed: int) -> CLVFit:
    """Fit BG/NBD on every customer of `summary` and Gamma-Gamma on those with usable spend."""
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    spend = gamma_gamma_rows(summary)
    if len(summary) < 10 or len(spend) < 10:
        raise ClvFitError(f"too few customers to fit ({len(summary)} with purchases, {len(spend)} with a repeat "
                         f"purchase and positive net value; at least 10 of each)")
    frame = summary.loc[:, ["customer_id", "frequency", "recency", "T"]]
    bgnbd = _fit_one(BetaGeoModel(), frame, method=method, draws=draws, seed=seed)
    gamma_gamma = _finite_mean_spend(_fit_one(GammaGammaModel(model_config=_gamma_gamma_priors()), spend,
                                              method=method, draws=draws, seed=seed + 1))
    return CLVFit(bgnbd, gamma_gamma, cutoff, len(summary), len(spend))


def _gamma_gamma_priors() -> dict[str, Any]:
    """pymc-marketing's flat priors on p and q leave the posterior improper on a small lake (q and v run
    off together along a ridge and the mode has no curvature: a 20,000-line generated lake failed so);
    half-normal priors of scale 10 bound them and are flat where data put them (UCI: p 1.9, q 3.7)."""
    from pymc_extras.prior import Prior

    return {"p": Prior("HalfNormal", sigma=10), "q": Prior("HalfNormal", sigma=10), "v": Prior("HalfFlat")}


def _finite_mean_spend(gamma_gamma):
    """Keep the Gamma-Gamma draws with q > 1: the population mean spend p v / (q - 1) exists only there
    (a poorly determined fit on few customers puts draws below 1, where spends turn negative or
    infinite). Refused when that leaves less than half of them."""
    posterior = gamma_gamma.idata.posterior
    keep = np.flatnonzero((posterior["q"].values > 1).all(axis=0))
    if len(keep) < posterior.sizes["draw"] / 2:
        raise ClvFitError(f"the mean spend is undefined (Gamma-Gamma q <= 1) in {posterior.sizes['draw'] - len(keep)} "
                         f"of {posterior.sizes['draw']} draws: too little spend data")
    if len(keep) < posterior.sizes["draw"]:
        gamma_gamma.idata.posterior = posterior.isel(draw=keep)
    return gamma_gamma


# -- predicting ---------------------------------------------------------------------------------------

def _draws(values) -> np.ndarray:
    """(chain, draw, customer) xarray -> (draws, customers) array."""
    array = np.asarray(values.transpose("chain", "draw", "customer_id").values, dtype=float)
    return array.reshape(-1, array.shape[-1])


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two fits' draws, paired one to one (the fits are independent, so any pairing is a joint draw)."""
    n = min(len(a), len(b))
    return a[:n], b[:n]


def expected_spend(model: CLVFit, summary: pd.DataFrame) -> np.ndarray:
    """(draws, customers): expected net spend per future purchase (population mean where `spend_basis` is
    `population`: Gamma-Gamma's conditional expectation with no observed transactions)."""
    own = summary["spend_basis"].to_numpy() == "own"
    data = pd.DataFrame({"customer_id": summary["customer_id"].to_numpy(),
                         "monetary_value": np.where(own, summary["monetary_value"], 0.0),
                         "frequency": np.where(own, summary["purchase_days"], 0).astype(float)})
    return _draws(model.gamma_gamma.expected_customer_spend(data))


def expected_purchases(model: CLVFit, summary: pd.DataFrame, days: int) -> np.ndarray:
    """(draws, customers): BG/NBD expected purchase days in the next `days` days."""
    frame = summary.loc[:, ["customer_id", "frequency", "recency", "T"]]
    return _draws(model.bgnbd.expected_purchases(frame, future_t=days))


def predict(model: CLVFit, summary: pd.DataFrame, *, interval: float) -> pd.DataFrame:
    """One row per customer of `summary`: probability alive (posterior mean) and expected purchases and
    value per horizon: the posterior median with its central `interval` over the parameter draws (`_low`,
    `_high`). The median, not the mean: the value of a customer is a product of two fits' draws whose
    distribution can be so skewed (a few draws of a huge mean spend) that its mean lies above its 90th
    percentile."""
    low_q, high_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    alive = _draws(model.bgnbd.expected_probability_alive(summary.loc[:, ["customer_id", "frequency", "recency",
                                                                          "T"]]))
    spend = expected_spend(model, summary)
    out = pd.DataFrame({"customer_id": summary["customer_id"].to_numpy(),
                        "probability_alive": alive.mean(axis=0)})
    for label, days in HORIZONS.items():
        purchases = expected_purchases(model, summary, days)
        paired_purchases, paired_spend = _pair(purchases, spend)
        value = paired_purchases * paired_spend
        for name, draws in ((f"expected_purchases_{label}", purchases), (f"expected_value_{label}", value)):
            out[name] = np.median(draws, axis=0)
            out[f"{name}_low"] = np.quantile(draws, low_q, axis=0)
            out[f"{name}_high"] = np.quantile(draws, high_q, axis=0)
    out["expected_spend_per_purchase"] = np.median(spend, axis=0)
    return out


# -- holdout ------------------------------------------------------------------------------------------

def _bucket(frequency: float) -> str:
    for name, low, high in BUCKETS:
        if frequency >= low and (high is None or frequency <= high):
            return name
    raise ValueError(f"negative frequency {frequency}")


@dataclass
class Holdout:
    """Predicted against actual purchase days (and net value) of the calibration customers in the holdout."""

    calibration_cutoff: date
    end: date
    days: int
    customers: int
    table: pd.DataFrame  # per bucket: customers, predicted, predicted_low, predicted_high, actual
    predicted_value: float
    actual_value: float

    @property
    def predicted(self) -> float:
        return float(self.table["predicted"].sum())

    @property
    def actual(self) -> float:
        return float(self.table["actual"].sum())

    @property
    def total(self) -> pd.Series:
        return self.table.set_index("bucket").loc["all"]

    def metrics(self) -> dict[str, float]:
        total = self.total
        out = {"holdout_days": float(self.days), "holdout_customers": float(self.customers),
               "holdout_predicted_purchases": float(total["predicted"]),
               "holdout_predicted_purchases_low": float(total["predicted_low"]),
               "holdout_predicted_purchases_high": float(total["predicted_high"]),
               "holdout_actual_purchases": float(total["actual"]),
               "holdout_purchases_ratio": float(total["predicted"] / total["actual"]) if total["actual"] else np.nan,
               "holdout_predicted_value": self.predicted_value, "holdout_actual_value": self.actual_value}
        out["holdout_accuracy"] = 1 - abs(out["holdout_purchases_ratio"] - 1)
        for row in self.table.itertuples():
            if row.bucket != "all":
                key = f"holdout_bucket_{str(row.bucket).replace('+', '_plus')}"  # MLflow refuses '+' in names
                out[f"{key}.predicted"] = float(row.predicted)
                out[f"{key}.actual"] = float(row.actual)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"calibration_cutoff": self.calibration_cutoff.isoformat(), "end": self.end.isoformat(),
                "days": self.days, "customers": self.customers, "predicted_value": self.predicted_value,
                "actual_value": self.actual_value, "buckets": self.table.to_dict(orient="records")}


def holdout(days: pd.DataFrame, returns: pd.DataFrame, *, calibration_cutoff: date, end: date, method: str,
            draws: int, seed: int, interval: float) -> Holdout:
    """Fit on the transactions before `calibration_cutoff`, predict [calibration_cutoff, end) and compare
    with what the same customers did (purchase days and net sale revenue; the returns of the holdout are
    left out of the actual value, as the prediction is per purchase)."""
    summary = summarise(days, returns, calibration_cutoff)
    model = fit(summary, calibration_cutoff, method=method, draws=draws, seed=seed)
    span = (end - calibration_cutoff).days
    purchases = expected_purchases(model, summary, span)
    spend = expected_spend(model, summary)
    paired_purchases, paired_spend = _pair(purchases, spend)
    later = days[(pd.to_datetime(days["invoice_date"]).dt.date >= calibration_cutoff)
                 & (pd.to_datetime(days["invoice_date"]).dt.date < end)]
    later = later[later["customer_id"].isin(summary["customer_id"])]
    actual = later.groupby("customer_id")["invoice_date"].nunique().reindex(summary["customer_id"]).fillna(0)
    buckets = summary["frequency"].map(_bucket).to_numpy()
    low_q, high_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    rows = []
    for name in [b[0] for b in BUCKETS] + ["all"]:
        mask = np.ones(len(summary), bool) if name == "all" else buckets == name
        totals = purchases[:, mask].sum(axis=1)
        rows.append({"bucket": name, "customers": int(mask.sum()), "predicted": float(totals.mean()),
                     "predicted_low": float(np.quantile(totals, low_q)),
                     "predicted_high": float(np.quantile(totals, high_q)),
                     "actual": float(actual.to_numpy()[mask].sum())})
    return Holdout(calibration_cutoff, end, span, len(summary), pd.DataFrame(rows),
                   predicted_value=float((paired_purchases * paired_spend).sum(axis=1).mean()),
                   actual_value=float(later["gross"].sum()))


def holdout_split(last_day: date, first_day: date, holdout_days: int) -> tuple[date, date] | None:
    """(calibration cutoff, end) for the holdout: the last `holdout_days` of the data, shortened to a third
    of the span when the data are shorter; None when that leaves under a week."""
    end = last_day + timedelta(days=1)
    span = (end - first_day).days
    days = min(holdout_days, span // 3)
    if days < 7:
        return None
    return end - timedelta(days=days), end


def saved(model: CLVFit) -> tempfile.TemporaryDirectory:
    """A temporary directory holding the saved model (the caller logs it, then cleans up)."""
    tmp = tempfile.TemporaryDirectory(prefix="shoplake-clv-")
    model.save(Path(tmp.name) / "model")
    return tmp
