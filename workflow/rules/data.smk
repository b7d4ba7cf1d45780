# Data: demo datasets (generated), the dataset index with its split, the decoded image cache.


rule make_demo_dataset:
    output:
        labels=paths.DEMO_LABELS,
    params:
        kind=dataset_kind,
        settings=demo_settings,
        seed=CONFIG["seed"],
    log:
        paths.log("make_demo_dataset", "{dataset}"),
    benchmark:
        paths.benchmark("make_demo_dataset", "{dataset}"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
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
        seed=CONFIG["seed"],
    log:
        paths.log("index_dataset", "{dataset}"),
    benchmark:
        paths.benchmark("index_dataset", "{dataset}"),
    threads: 1
    resources:
        mem_mb=sized("index_dataset", "mem_mb"),
        runtime=sized("index_dataset", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/index_dataset.py"


# The caches decode with up to 4 threads (Pillow lets go of the GIL; the same bytes for any number),
# and check that the images are colour, or grey, as the dataset's config or kind says.
rule cache_images:
    input:
        index=rules.index_dataset.output.index,
    output:
        cache=paths.CACHE,
    params:
        size=CONFIG["image_size"],
        kind=dataset_kind,
        colour=dataset_colour,
    log:
        paths.log("cache_images", "{dataset}"),
    benchmark:
        paths.benchmark("cache_images", "{dataset}")
    threads: 4
    resources:
        mem_mb=sized("cache_images", "mem_mb"),
        runtime=sized("cache_images", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/cache_images.py"


rule cache_full_images:
    input:
        index=rules.index_dataset.output.index,
    output:
        full=paths.FULL_CACHE,
        hw=paths.FULL_HW,
    params:
        size=CONFIG["image_size"],
        settings=protocol_settings("finetune"),
        kind=dataset_kind,
        colour=dataset_colour,
    log:
        paths.log("cache_full_images", "{dataset}"),
    benchmark:
        paths.benchmark("cache_full_images", "{dataset}")
    threads: 4
    resources:
        mem_mb=sized("cache_full_images", "mem_mb"),
        runtime=sized("cache_full_images", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/cache_full_images.py"
