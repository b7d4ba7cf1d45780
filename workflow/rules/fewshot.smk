# Few-shot (prototypical networks): episodes drawn once per (dataset, setting) and shared
# by every model; prototypes from the cached features.


rule sample_episodes:
    input:
        index=rules.index_dataset.output.index,
    output:
        episodes=paths.EPISODES,
    params:
        n_way=n_way,
        n_support=n_support,
        pool=fewshot_pool,
        settings=protocol_settings("fewshot"),
        seed=CONFIG["seed"],
    log:
        "logs/sample_episodes/{dataset}/{setting}.log",
    benchmark:
        "benchmarks/sample_episodes/{dataset}/{setting}.tsv",
    threads: 1
    resources:
        mem_mb=sized("sample_episodes", "mem_mb"),
        runtime=sized("sample_episodes", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/sample_episodes.py"


rule fewshot:
    input:
        features=rules.extract_features.output.features,
        episodes=rules.sample_episodes.output.episodes,
    output:
        rows=registry.rows_path("fewshot"),
        predictions=registry.predictions_path("fewshot"),
    params:
        seed=CONFIG["seed"],
    log:
        "logs/fewshot/{model}/{dataset}/{setting}.log",
    benchmark:
        "benchmarks/fewshot/{model}/{dataset}/{setting}.tsv",
    threads: 1
    resources:
        mem_mb=sized("fewshot", "mem_mb"),
        runtime=sized("fewshot", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fewshot.py"
