# Weights: demo stand-ins (generated), download with checks, conversion to torchvision layout.


rule make_demo_weights:
    output:
        weights=paths.DEMO_WEIGHTS,
    params:
        fmt=model_format,
        arch=model_arch,
        random=model_is_random,
        seed=CONFIG["seed"],
    log:
        "logs/make_demo_weights/{model}/{filename}.log",
    benchmark:
        "benchmarks/make_demo_weights/{model}/{filename}.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/make_demo_weights.py"


rule download_weights:
    wildcard_constraints:
        model=_alternatives(STUDY.downloads),
    input:
        local=download_inputs,
    output:
        source=paths.DOWNLOAD,
    params:
        url=model_url,
        sha256=model_sha256,
        lock=CONFIG["weights_lock"],
    log:
        "logs/download_weights/{model}/{filename}.log",
    benchmark:
        "benchmarks/download_weights/{model}/{filename}.tsv"
    retries: 1
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/download_weights.py"


rule convert_weights:
    input:
        source=weights_source,
    output:
        weights=paths.WEIGHTS,
    params:
        fmt=model_format,
        normalisation=model_normalisation,
        arch=model_arch,
        demo=model_is_demo,
        random=model_is_random,
    log:
        "logs/convert_weights/{model}.log",
    benchmark:
        "benchmarks/convert_weights/{model}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/convert_weights.py"
