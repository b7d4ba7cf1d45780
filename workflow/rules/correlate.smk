# Correlate: Spearman and Pearson correlations between transfer scores and the explanatory
# measures (ImageNet top-1, LPIPS, attentive diffusion, invariances): across models per dataset,
# pooled over datasets, of dataset-averaged scores, and per model across datasets, as table rows
# (protocol correlation) and scatter figures. The random baseline is left out by default.


rule correlate:
    input:
        rows=correlation_inputs,
    output:
        rows=paths.CORRELATION,
    params:
        top1=STUDY.top1(),
        top1_source=STUDY.top1_source(),
        headline=STUDY.headline_metrics(),
        exclude=STUDY.correlation_exclude(),
        same_data=STUDY.same_data(),
        settings=correlation_settings(),
        seed=CONFIG["seed"],
    log:
        paths.log("correlate"),
    benchmark:
        paths.benchmark("correlate")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/correlate.py"


rule correlation_figures:
    input:
        table=rules.table.output.table,
    output:
        figures=report(
            correlation_figure_paths(),
            caption="../report/correlation.rst",
            category="correlation",
        ),
    params:
        measures=STUDY.correlation_measures(),
        top1=STUDY.top1(),
        headline=STUDY.headline_metrics(),
        exclude=STUDY.correlation_exclude(),
    log:
        paths.log("correlation_figures"),
    benchmark:
        paths.benchmark("correlation_figures")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/correlation_figures.py"
