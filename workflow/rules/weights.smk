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
        paths.log("make_demo_weights", "{model}/{filename}"),
    benchmark:
        paths.benchmark("make_demo_weights", "{model}/{filename}"),
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
        paths.log("download_weights", "{model}/{filename}"),
    benchmark:
        paths.benchmark("download_weights", "{model}/{filename}")
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
        paths.log("convert_weights", "{model}"),
    benchmark:
        paths.benchmark("convert_weights", "{model}")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/convert_weights.py"
