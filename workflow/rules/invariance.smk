# Invariance: whitened cosine similarity and Mahalanobis distance between the features of
# an image and of its transforms (applied to the whole image from the finetune stage's
# whole-image cache, before the crop; whitened with the clean crops of that cache's training
# images), and between two views of one case (multiview, from the features stage and whitened
# with it). Colour datasets run every transform (rule invariance); grey ones, when the study
# runs a colour-only transform (hue), the others (rule invariance_grey: the same job, fewer outputs).


rule invariance:
    input:
        weights=rules.convert_weights.output.weights,
        full=rules.cache_full_images.output.full,
        hw=rules.cache_full_images.output.hw,
        index=rules.index_dataset.output.index,
    output:
        rows=invariance_outputs("rows", colour=True),
        predictions=invariance_outputs("predictions", colour=True),
    params:
        settings=protocol_settings("invariance"),
        transforms=STUDY.transforms(colour=True),
        size=CONFIG["image_size"],
        device=CONFIG["device"],
        seed=CONFIG["seed"],
    wildcard_constraints:
        dataset=invariance_datasets(colour=True),
    log:
        paths.log("invariance", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("invariance", "{model}/{dataset}")
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=sized("invariance", "mem_mb"),
        runtime=sized("invariance", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/invariance.py"


if STUDY.invariance_datasets(colour=False):

    use rule invariance as invariance_grey with:
        output:
            rows=invariance_outputs("rows", colour=False),
            predictions=invariance_outputs("predictions", colour=False),
        params:
            transforms=STUDY.transforms(colour=False),
        wildcard_constraints:
            dataset=invariance_datasets(colour=False),


rule multiview_invariance:
    input:
        features=rules.extract_features.output.features,
        index=rules.index_dataset.output.index,
    output:
        rows=paths.rows("invariance", setting="multiview"),
        predictions=paths.predictions("invariance", setting="multiview"),
    params:
        settings=protocol_settings("invariance"),
        seed=CONFIG["seed"],
    log:
        paths.log("multiview_invariance", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("multiview_invariance", "{model}/{dataset}")
    threads: 1
    resources:
        mem_mb=sized("multiview_invariance", "mem_mb"),
        runtime=sized("multiview_invariance", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/multiview_invariance.py"
