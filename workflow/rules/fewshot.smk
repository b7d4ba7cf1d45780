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
        paths.log("sample_episodes", "{dataset}/{setting}"),
    benchmark:
        paths.benchmark("sample_episodes", "{dataset}/{setting}"),
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
        rows=paths.rows("fewshot"),
        predictions=paths.predictions("fewshot"),
    params:
        seed=CONFIG["seed"],
    log:
        paths.log("fewshot", "{model}/{dataset}/{setting}"),
    benchmark:
        paths.benchmark("fewshot", "{model}/{dataset}/{setting}"),
    threads: 1
    resources:
        mem_mb=sized("fewshot", "mem_mb"),
        runtime=sized("fewshot", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fewshot.py"
