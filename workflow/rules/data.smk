# Data: demo datasets (generated), the dataset index with its split, the decoded image cache.


rule make_demo_dataset:
    output:
        labels=paths.DEMO_LABELS,
    params:
        kind=dataset_kind,
        settings=demo_settings,
        seed=config["seed"],
    log:
        "logs/make_demo_dataset/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/make_demo_dataset.py"


rule index_dataset:
    input:
        csv=index_inputs,
    output:
        index=paths.INDEX,
    params:
        spec=dataset_spec,
        root=dataset_root,
        csv=dataset_csv,
        seed=config["seed"],
    log:
        "logs/index_dataset/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/index_dataset.py"


rule cache_images:
    input:
        index=rules.index_dataset.output.index,
    output:
        cache=paths.CACHE,
    params:
        size=config["image_size"],
        kind=dataset_kind,
    log:
        "logs/cache_images/{dataset}.log",
    resources:
        mem_mb=4000,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/cache_images.py"
