"""The zoo section's checks beyond its schema (lotto/zoo/schema.yaml), each problem naming its config key.
Import-light: the config check runs at the Snakefile's parse time."""

from __future__ import annotations

from lotto.datasets import NUM_CLASSES


def problems(cfg: dict) -> list[str]:
    zoo, data = cfg["zoo"], cfg.get("data")
    problems = []
    main = zoo.get("main_task") or (data or {}).get("dataset")
    names = [main] + [t["name"] for t in zoo["tasks"]]
    for i, task in enumerate(zoo["tasks"]):
        key = f"zoo.tasks[{i}]"
        if names.count(task["name"]) > 1:
            problems.append(f"config key '{key}.name': task name {task['name']!r} is used twice "
                            f"(the main task is called {main!r}: see zoo.main_task)")
        source = task.get("source", "torchvision")  # defaults are not filled inside lists
        if source == "local" and not task.get("path"):
            problems.append(f"config key '{key}.path': required when its source is 'local'")
        if (source == "embedded") != (task["dataset"] == "mnist_embedded"):
            problems.append(f"config key '{key}.source': source 'embedded' serves exactly dataset 'mnist_embedded'")
        # zoo tasks share one output layer: tickets move between tasks
        if data and NUM_CLASSES[task["dataset"]] != NUM_CLASSES[data["dataset"]]:
            problems.append(
                f"config key '{key}.dataset': {task['dataset']!r} has {NUM_CLASSES[task['dataset']]} "
                f"classes but the main task data.dataset {data['dataset']!r} has "
                f"{NUM_CLASSES[data['dataset']]} (tickets move between tasks with one output layer)"
            )
    transfer = zoo["transfer"]
    uses_rewind_t = "rewind_t" in zoo["handlings"] or transfer["handling"] == "rewind_t"
    if uses_rewind_t and zoo["rewind_step"] == 0:
        problems.append("config key 'zoo.rewind_step': must be > 0 when the handling 'rewind_t' is used "
                        "(rewinding to step 0 is rewind_init)")
    m = transfer["consensus_min"]
    if m is not None and m > len(names):
        problems.append(f"config key 'zoo.transfer.consensus_min': {m} exceeds the number of tasks ({len(names)})")
    eh = zoo["ensemble_handling"]
    if eh is not None and eh not in zoo["handlings"]:
        problems.append(f"config key 'zoo.ensemble_handling': {eh!r} is not one of zoo.handlings")
    return problems


def schedule_problems(cfg: dict, schedules) -> None:
    """The zoo's tasks are data sets of their own (sizes checked, schedules computed); its rewind point and
    finetuning start must lie inside the schedule on every task they are used on (zoo.smk: zoo_runs)."""
    zoo = cfg["zoo"]
    for i, t in enumerate(zoo["tasks"]):
        schedules.add_task(f"zoo task {t['name']!r}", f"zoo.tasks[{i}]", t)
    all_keys = ["data"] + [f"zoo.tasks[{i}]" for i in range(len(zoo["tasks"]))]
    grid_keys = all_keys if zoo["grid"] == "all" else ["data"]

    def runs_on(handling):  # tasks on which a handling runs (zoo.smk: zoo_runs)
        keys = grid_keys if handling in zoo["handlings"] else []
        return all_keys if zoo["transfer"]["handling"] == handling else keys

    if "rewind_t" in zoo["handlings"] or zoo["transfer"]["handling"] == "rewind_t":
        # with rewind_t anywhere, every task's dense network trains from its rewind point
        schedules.beyond("zoo.rewind_step", zoo["rewind_step"], "rewind point", all_keys)
    if zoo["finetune_start"]:
        schedules.beyond("zoo.finetune_start", zoo["finetune_start"], "finetuning start", runs_on("finetune"))
