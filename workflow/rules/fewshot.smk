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
        settings=protocol_settings("fewshot"),
        seed=config["seed"],
    log:
        "logs/sample_episodes/{dataset}/{variant}.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/sample_episodes.py"


rule fewshot:
    input:
        features=rules.extract_features.output.features,
        episodes=rules.sample_episodes.output.episodes,
    output:
        rows=paths.ROWS.replace("{protocol}", "fewshot"),
        predictions=paths.PREDICTIONS.replace("{protocol}", "fewshot"),
    params:
        seed=config["seed"],
    log:
        "logs/fewshot/{model}/{dataset}/{variant}.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fewshot.py"
