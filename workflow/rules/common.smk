# Shared set-up: config validation, the resolved study, wildcard constraints and the
# input functions every stage uses (no logic in rule bodies; see src/medtransfer/study.py).
import re

from snakemake.utils import validate

from medtransfer import resources as sizing
from medtransfer import stages
from medtransfer import study as paths
from medtransfer.study import Study


# Study first: its errors name the key and the allowed values (and check what a schema
# cannot: roots exist, n_way fits the classes), before any job runs.
STUDY = Study(config)
validate(config, schema="../../config/schema.yaml")
# The resolved config: every default filled from the schema (its one home).
CONFIG = STUDY.config
PROTOCOLS = STUDY.protocols


def _alternatives(names):
    return "|".join(re.escape(n) for n in names)


wildcard_constraints:
    model=_alternatives(STUDY.models),
    net="alex|vgg|squeeze",
    dataset=_alternatives(STUDY.datasets),
    protocol=_alternatives(stages.PROTOCOLS),
    setting=r"manyshot|\d+shot|dip",


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


def model_is_demo(wildcards):
    return STUDY.models[wildcards.model].demo


def index_inputs(wildcards):
    return STUDY.index_inputs(wildcards.dataset)


def dataset_spec(wildcards):
    return STUDY.datasets[wildcards.dataset]


def dataset_kind(wildcards):
    return STUDY.datasets[wildcards.dataset]["kind"]


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
    return int(wildcards.setting.removesuffix("shot"))


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
    return STUDY.settings(protocol) if protocol in PROTOCOLS else {}


def comparison_n_bootstrap(wildcards):
    return STUDY.settings(wildcards.protocol).get("n_bootstrap", 0)


def gpus(wildcards):
    """One GPU for the GPU stages unless the study runs on the CPU."""
    return 0 if CONFIG["device"] == "cpu" else 1


def _estimate(stage, input, threads, attempt):
    """medtransfer.resources' request for one job of ``stage`` (re-evaluated once its inputs exist)."""
    size = CONFIG["image_size"]
    if stage == "reconstruct":
        return sizing.reconstruct(image_size=size, settings=STUDY.settings("reconstruction"), attempt=attempt)
    if stage == "score":
        return sizing.score(settings=STUDY.settings("reconstruction"), attempt=attempt)
    n_images = sizing.count_images(input.index)
    if stage == "cache":
        return sizing.cache(n_images, threads=threads, attempt=attempt)
    if stage == "extract":
        return sizing.extract(n_images, image_size=size, attempt=attempt)
    return sizing.finetune(n_images, image_size=size, settings=STUDY.settings("finetune"), attempt=attempt)


def sized(stage, field):
    """A resource callable: ``field`` (runtime or mem_mb) of the estimate for ``stage``, sized
    from the job's inputs and settings and doubled on each retry (src/medtransfer/resources.py)."""

    def resource(wildcards, input, threads, attempt):
        return getattr(_estimate(stage, input, threads, attempt), field)

    return resource


def _unit(wildcards):
    return paths.Unit(wildcards.protocol, wildcards.dataset, wildcards.setting)


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
    return stages.get(wildcards.protocol).metrics[0]


def study_figures():
    """The heatmap of every protocol and the reconstruction figures of every dataset."""
    figures = expand(rules.figure.output.figure, protocol=PROTOCOLS)
    if "reconstruction" in PROTOCOLS:
        figures += expand(rules.reconstruction_figures.output.grid, dataset=STUDY.datasets)
    return figures


def table_inputs(wildcards):
    return STUDY.table_inputs()


def comparison_metric(wildcards):
    """The dataset's headline metric where the protocol reports it, else its first metric."""
    metrics = stages.get(wildcards.protocol).metrics
    own = STUDY.metric(wildcards.dataset)
    return own if own in metrics else metrics[0]
