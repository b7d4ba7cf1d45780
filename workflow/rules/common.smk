# Shared set-up: config validation, the resolved study, wildcard constraints and the
# input functions every stage uses (no logic in rule bodies; see src/medtransfer/study.py).
import re
from pathlib import Path

from snakemake.utils import validate

from medtransfer import paths
from medtransfer import protocols as registry
from medtransfer import resources as sizing
from medtransfer.config import SCHEMA
from medtransfer.reporting import summary
from medtransfer.study import Study, Unit


# Study first: its errors name the key and the allowed values (and check what a schema
# cannot: roots exist, n_way fits the classes), before any job runs.
STUDY = Study(config)
# The package's schema, so a workflow copied away from the checkout still finds it.
validate(config, schema=str(SCHEMA))
# The resolved config: every default filled from the schema (its one home).
CONFIG = STUDY.config
PROTOCOLS = STUDY.protocols


def _alternatives(names):
    return "|".join(re.escape(n) for n in names)


wildcard_constraints:
    model=_alternatives(STUDY.models),
    net="alex|vgg|squeeze",
    dataset=_alternatives(STUDY.datasets),
    protocol=_alternatives(registry.PROTOCOLS),
    setting=registry.setting_pattern(),


def weights_source(wildcards):
    return STUDY.weights_source(wildcards.model)


def download_inputs(wildcards):
    return STUDY.download_inputs(wildcards.model)


def model_url(wildcards):
    return STUDY.downloads[wildcards.model].url


def model_sha256(wildcards):
    return STUDY.downloads[wildcards.model].sha256


def model_format(wildcards):
    return STUDY.models[wildcards.model].format


def model_normalisation(wildcards):
    return STUDY.models[wildcards.model].normalisation


def model_arch(wildcards):
    return STUDY.models[wildcards.model].arch


def model_is_random(wildcards):
    return STUDY.models[wildcards.model].random


def model_is_demo(wildcards):
    return STUDY.models[wildcards.model].demo


def index_inputs(wildcards):
    return STUDY.index_inputs(wildcards.dataset)


def dataset_spec(wildcards):
    return STUDY.datasets[wildcards.dataset]


def dataset_kind(wildcards):
    return STUDY.datasets[wildcards.dataset]["kind"]


def dataset_colour(wildcards):
    return STUDY.colour[wildcards.dataset]


def dataset_root(wildcards):
    return STUDY.dataset_root(wildcards.dataset)


def dataset_csv(wildcards):
    return STUDY.dataset_csv(wildcards.dataset)


def dataset_metric(wildcards):
    return STUDY.metric(wildcards.dataset)


def demo_settings(wildcards):
    return STUDY.datasets[wildcards.dataset].get("demo", {})


def n_way(wildcards):
    return STUDY.n_way(wildcards.dataset)


def fewshot_pool(wildcards):
    return STUDY.fewshot_pool(wildcards.dataset)


def n_support(wildcards):
    return registry.support_size(wildcards.setting)


def finetune_full_cache(wildcards):
    """The whole-image cache when finetune crops from whole images (and its sidecar)."""
    if not STUDY.settings("finetune")["full_image"]:
        return {}
    return {"full_cache": rules.cache_full_images.output.full.format(dataset=wildcards.dataset),
            "full_hw": rules.cache_full_images.output.hw.format(dataset=wildcards.dataset)}


def finetune_settings():
    """Finetune's settings for training; the whole-image cache's own go to cache_full_images."""
    return {k: v for k, v in protocol_settings("finetune").items() if not k.startswith("full_")}


def protocol_settings(protocol):
    return STUDY.settings_or_defaults(protocol)


def comparison_n_bootstrap(wildcards):
    return STUDY.settings(wildcards.protocol).get("n_bootstrap", 0)


def gpus(wildcards):
    """One GPU for the GPU stages unless the study runs on the CPU."""
    return 0 if CONFIG["device"] == "cpu" else 1


def sized(name, field):
    """A resource callable: ``field`` (runtime or mem_mb) of the estimate for a job of rule ``name``,
    sized from its dataset and settings and doubled on each retry (src/medtransfer/resources.py)."""

    def resource(wildcards, threads, attempt):
        request = sizing.estimate(name, STUDY, wildcards.get("dataset"), threads=threads, attempt=attempt)
        return getattr(request, field)

    return resource


def _unit(wildcards):
    return Unit(wildcards.protocol, wildcards.dataset, wildcards.setting)


def compare_inputs(wildcards):
    return STUDY.compare_inputs(_unit(wildcards))


def lpips_weights(wildcards):
    return STUDY.lpips_weights()


def lpips_net(wildcards):
    return wildcards.net


def reconstruction_inputs(wildcards):
    """Every model's reconstructions and scores of one dataset (for its figures)."""
    return {
        "images": expand(rules.reconstruct.output.images, model=STUDY.models, dataset=wildcards.dataset),
        "predictions": expand(rules.score_reconstruction.output.predictions, model=STUDY.models,
                              dataset=wildcards.dataset),
    }


def figure_metric(wildcards):
    return registry.get(wildcards.protocol).metrics[0]


def published_numbers():
    """The published numbers the summary joins (package data: a change rebuilds the summary)."""
    return str(summary.PUBLISHED)


def study_figures():
    return STUDY.figures()


def saliency_maps(wildcards):
    """Every model's saliency maps of one dataset (for its figures)."""
    return expand(rules.saliency.output.maps, model=STUDY.models, dataset=wildcards.dataset)


def saliency_figure_paths(kind):
    return expand(paths.SALIENCY_FIGURE, model=STUDY.models, kind=kind, allow_missing=True)


def invariance_outputs(kind, colour):
    """One rows (or predictions) file per synthetic transform of colour (or grey) datasets."""
    make = paths.rows if kind == "rows" else paths.predictions
    return [make("invariance", setting=t) for t in STUDY.transforms(colour)]


def invariance_datasets(colour):
    """The dataset wildcard's pattern of an invariance rule: the colour (or grey) datasets, or none."""
    return _alternatives(STUDY.invariance_datasets(colour)) or "(?!)"


def correlation_inputs(wildcards):
    return STUDY.correlation_inputs()


def correlation_settings():
    return CONFIG["correlation"] if STUDY.correlates else {"n_bootstrap": 0}


def correlation_figure_paths():
    return STUDY.correlation_figures()


def table_inputs(wildcards):
    return STUDY.table_inputs()


def comparison_metric(wildcards):
    """The dataset's headline metric where the protocol reports it, else its first metric."""
    return registry.get(wildcards.protocol).compared_metric(STUDY.metric(wildcards.dataset))


def rule_stages():
    """Each rule's stage: the name of the rule file it lives in (workflow/rules/<stage>.smk)."""
    return {rule.name: Path(rule.snakefile).stem for rule in workflow.rules}
