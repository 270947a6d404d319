"""The Streamlit lab, run headless with AppTest: every page renders, and widgets change content."""

import time
from pathlib import Path

from page_plots import chart_truth, image_urls
from streamlit.testing.v1 import AppTest

from toylab import zoo

APPS = Path(__file__).resolve().parents[2] / "apps"
HOME = APPS / "Home.py"


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def frame_with(at: AppTest, column: str):
    """The one dataframe on the page that has ``column``."""
    frames = [df.value for df in at.dataframe if column in df.value.columns]
    assert len(frames) == 1, f"{len(frames)} dataframes with a {column!r} column"
    return frames[0]


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=30).run()
    assert not at.exception, at.exception
    if page is not None:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


def test_home_lists_the_zoo_with_provenance_and_links_every_lesson(lessons):
    at = open_page()
    assert texts(at.title) == ["toylab: the lab"]
    table = frame_with(at, "truth provenance")
    assert list(table["name"]) == zoo.names()
    assert dict(zip(table["name"], table["truth provenance"])) == {
        n: zoo.recipe(n).provenance or "-" for n in zoo.names()}
    links = [link.proto.label for link in at.get("page_link")]
    assert links == [title for _, title in lessons]


def test_lab_common_holds_only_what_several_pages_share(lessons):
    """A computation one page shows is defined in that page; lab_common keeps what pages share."""
    import ast
    import re

    source = (APPS / "lab_common.py").read_text()
    shared = [name for node in ast.parse(source).body
              for name in ([node.name] if isinstance(node, ast.FunctionDef) else
                           [t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign)
                           else [])
              if not name.startswith("_")]
    pages = {path: (APPS / path).read_text() for path, _ in lessons} | {"Home.py": HOME.read_text()}
    for name in shared:
        users = [path for path, text in pages.items() if re.search(rf"\blab(_common)?\.{name}\b", text)]
        inside = len(re.findall(rf"\b{name}\b", source)) > 1  # lab_common's own shared helpers use it
        assert len(users) + inside >= 2, f"lab_common.{name} is used only by {users or 'no page'}: move it there"


def test_every_lesson_page_renders(lesson):
    path, title = lesson
    assert (APPS / path).is_file()
    at = open_page()
    start = time.perf_counter()
    at.switch_page(path).run()
    first = time.perf_counter() - start
    assert not at.exception, at.exception
    assert texts(at.title) == [title]
    start = time.perf_counter()
    at.run()
    rerun = time.perf_counter() - start
    print(f"{path}: first run {first:.2f} s, rerun {rerun:.2f} s")
    assert rerun < 5.0, f"{path} takes {rerun:.1f} s to rerun with warm caches"


def test_tour_card_follows_the_model_and_the_prompt_follows_the_seed():
    at = open_page("lab_pages/tour.py")
    assert any("induction-siit, seed 0" in h for h in texts(at.header))
    assert "enforced" in " ".join(texts(at.markdown))
    hooks = frame_with(at, "hook")
    assert "blocks.1.attn.hook_pattern" in list(hooks["hook"])
    prompt = list(frame_with(at, "0").iloc[0])
    assert prompt[:2] == ["token", "BOS"]

    at.selectbox(key="tour_seed").set_value(2).run()
    assert any("induction-siit, seed 2" in h for h in texts(at.header))

    at.number_input(key="tour_sample").set_value(7).run()
    assert list(frame_with(at, "0").iloc[0]) != prompt

    at.selectbox(key="tour_model").set_value("modadd-tiny").run()
    assert not at.exception, at.exception
    assert any("modadd-tiny, seed 2" in h for h in texts(at.header))  # seed 2 ships for both models
    assert "ModularAddition" in " ".join(texts(at.markdown))
    assert "certified" in " ".join(texts(at.markdown))
    assert {m.label: m.value for m in at.metric}["Certificate"] == "passed"


def test_tour_shows_a_constructed_model_without_training_curves():
    at = open_page("lab_pages/tour.py")
    at.selectbox(key="tour_model").set_value("induction-constructed").run()
    assert not at.exception, at.exception
    assert any("constructed model" in t for t in texts(at.info))
    assert image_urls(at) == []


def test_induction_page_offers_only_induction_models():
    at = open_page("lab_pages/induction.py")
    options = at.selectbox(key="ind_model").options
    assert options == [n for n in zoo.names() if zoo.recipe(n).task.kind == "induction"]
    assert "modadd-113" not in options


def test_induction_head_choice_changes_the_pattern_and_its_caption():
    at = open_page("lab_pages/induction.py")
    at.selectbox(key="ind_layer").set_value(1).run()
    at.selectbox(key="ind_head").set_value(1).run()
    urls = image_urls(at)
    pattern, heatmaps = urls[0], urls[1:4]  # then OV, positional QK and composition
    assert len(urls) == 7
    assert any("L1H1: the ground truth makes it a **induction** head" in c for c in texts(at.caption))

    at.selectbox(key="ind_head").set_value(0).run()
    pattern0, heatmaps0 = image_urls(at)[0], image_urls(at)[1:4]
    assert pattern0 != pattern and heatmaps0 == heatmaps  # only the selected head's plot changes
    assert any("L1H0: no attention role" in c for c in texts(at.caption))


def test_ground_truth_toggle_changes_the_outlined_plots():
    at = open_page("lab_pages/induction.py")
    at.selectbox(key="ind_layer").set_value(0).run()
    at.selectbox(key="ind_head").set_value(2).run()  # L0H2, the previous-token head of induction-siit
    shown = image_urls(at)
    assert chart_truth(at, 0) > 0 and chart_truth(at, 1) == 1  # the pattern's cells; L0H2 among the heads
    at.toggle(key="ind_truth").set_value(False).run()
    hidden = image_urls(at)
    assert chart_truth(at, 0) == 0 and chart_truth(at, 1) == 0
    assert hidden[0] != shown[0]  # the pattern loses its outlined cells
    assert hidden[1] != shown[1] and hidden[3] != shown[3]  # previous-token and induction heatmaps
    assert hidden[2] == shown[2]  # no head has the duplicate-token role, so nothing to outline
    assert any("ground truth hidden" in c for c in texts(at.caption))


def test_induction_prompt_can_be_sampled_or_typed():
    at = open_page("lab_pages/induction.py")
    sampled = image_urls(at)[0]
    at.number_input(key="ind_prompt_seed").set_value(3).run()
    assert image_urls(at)[0] != sampled

    at.radio(key="ind_source").set_value("typed").run()
    at.text_input(key="ind_tokens").input("BOS t1 t2 t3 t1 t2 t3").run()
    assert not at.exception and not at.error
    assert image_urls(at)[0] != sampled

    at.text_input(key="ind_tokens").input("BOS t1 nonsense").run()
    assert "unknown tokens ['nonsense']" in at.error[0].value
    assert image_urls(at) == []  # the page stops before plotting


def test_induction_page_works_for_every_induction_model_and_seed():
    at = open_page("lab_pages/induction.py")
    for name in at.selectbox(key="ind_model").options:
        at.selectbox(key="ind_model").set_value(name).run()
        for seed in at.selectbox(key="ind_seed").options:
            at.selectbox(key="ind_seed").set_value(seed).run()
            assert not at.exception, (name, seed, at.exception)
            assert len(image_urls(at)) == 7, (name, seed)  # pattern, 3 detectors, OV, positional QK, composition


def test_induction_circuits_follow_the_head_and_the_composition_kind():
    at = open_page("lab_pages/induction.py")
    at.selectbox(key="ind_layer").set_value(1).run()
    at.selectbox(key="ind_head").set_value(1).run()
    before = image_urls(at)
    assert len(before) == 7
    assert any("Copying score" in c for c in texts(at.caption))
    assert any("Ground truth K-composition edges (outlined): L0H2 -> L1H1" in c for c in texts(at.caption))

    at.selectbox(key="ind_head").set_value(0).run()
    after_head = image_urls(at)
    assert after_head[4] != before[4] and after_head[5] != before[5]  # OV and QK of the new head
    assert after_head[6] == before[6]  # composition does not depend on the selected head

    at.radio(key="ind_comp").set_value("v").run()
    assert not at.exception, at.exception
    assert image_urls(at)[6] != after_head[6]
    assert image_urls(at)[:6] == after_head[:6]
    assert any("V-composition" in c for c in texts(at.caption))


def test_composition_outlines_the_truths_edges_of_the_kind():
    from toylab import viz

    at = open_page("lab_pages/induction.py")
    at.selectbox(key="ind_model").set_value("induction-constructed").run()
    figure = composition_figure(at, "k")
    assert len(viz.truth_outlines(figure)) == 1  # L0H1 -> L1H1
    assert len(viz.truth_outlines(composition_figure(at, "q"))) == 0
    shown = image_urls(at)[6]
    at.toggle(key="ind_truth").set_value(False).run()
    assert image_urls(at)[6] != shown


def composition_figure(at: AppTest, kind: str):
    """The composition heatmap the page draws, rebuilt from the same inputs (to count its outlines)."""
    from toylab import methods, viz

    name = at.selectbox(key="ind_model").value
    seed = at.selectbox(key="ind_seed").value
    zm = zoo.load(name, seed=int(seed))
    scores = methods.composition_scores(zm.model, kind).scores.numpy()
    n = zm.model.cfg.n_heads
    grid = scores[0, :, 1, :].T  # [receiver head, sender head]
    cells = {(int(e.receiver[3:]), int(e.sender[3:])) for e in zm.truth.edges
             if e.kind == kind and e.sender.startswith("L0H") and e.receiver.startswith("L1H")}
    return viz.heatmap(grid, [f"L1H{h}" for h in range(n)], [f"L0H{h}" for h in range(n)], highlight=cells,
                       diverging=False)


# ---- page 3: activation and path patching ----------------------------------------------------

PATCHING = "lab_pages/patching.py"


def test_patching_page_runs_for_every_induction_model_and_other_tasks():
    at = open_page(PATCHING)
    models = at.selectbox(key="patch_model").options
    assert set(models) == set(zoo.names())  # every task has counterfactual pairs
    induction = [n for n in models if zoo.recipe(n).task.kind == "induction"]
    for name in [*induction, "modadd-tiny", "brackets-siit"]:
        at.selectbox(key="patch_model").set_value(name).run()
        assert not at.exception, (name, at.exception)
        assert not at.error, (name, texts(at.error))
        assert len(image_urls(at)) == 2, name  # activation patching and path patching
        labels = {m.label for m in at.metric}
        assert {"Clean logit difference", "Corrupted logit difference", "Sweep time"} <= labels
        offered = {option.split(":")[0] for option in at.selectbox(key="patch_target").options}  # "head: ..."
        assert ("mlp_out" in offered) != zoo.recipe(name).model.attn_only


def test_patching_target_changes_the_heatmap_and_its_caption():
    at = open_page(PATCHING)
    assert at.selectbox(key="patch_target").value == "head"
    heads = image_urls(at)[0]
    assert any("**head** patching, scores [layer, head]" in c for c in texts(at.caption))
    at.selectbox(key="patch_target").set_value("resid_pre").run()
    assert not at.exception, at.exception
    assert image_urls(at)[0] != heads
    assert any("**resid_pre** patching, scores [layer, pos]" in c for c in texts(at.caption))
    at.selectbox(key="patch_target").set_value("head_pos").run()
    pos1 = image_urls(at)[0]
    at.selectbox(key="patch_layer").set_value(0).run()
    assert image_urls(at)[0] != pos1
    assert any("**head_pos** patching of layer 0" in c for c in texts(at.caption))


def test_patching_truth_toggle_outlines_the_truths_heads():
    from toylab import methods, viz

    at = open_page(PATCHING)
    shown = image_urls(at)
    at.toggle(key="patch_truth").set_value(False).run()
    hidden = image_urls(at)
    assert hidden[0] != shown[0] and hidden[1] != shown[1]
    assert any("Ground truth hidden" in c for c in texts(at.caption))
    # The same figure the page draws for induction-siit's head patching, with and without truth.
    zm = zoo.load("induction-siit", seed=0)
    result = methods.activation_patching(zm.model, zm.task.counterfactual(32, seed=0), "head", direction="denoise")
    rows, heads = ["L0", "L1"], ["H0", "H1", "H2", "H3"]
    outlined = viz.heatmap(result.scores.numpy(), rows, heads, highlight={(0, 2), (1, 1)})
    assert len(viz.truth_outlines(outlined)) == 2


def test_head_patching_ranks_a_truth_head_first_on_the_constructed_model():
    at = open_page(PATCHING)
    at.selectbox(key="patch_model").set_value("induction-constructed").run()
    assert at.selectbox(key="patch_target").value == "head"
    top = frame_with(at, "patched")
    truth = set(zoo.load("induction-constructed").truth.heads)
    assert top["patched"].iloc[0] in truth
    assert bool(top["ground truth"].iloc[0])


def test_path_patching_follows_receivers_and_input():
    at = open_page(PATCHING)
    at.selectbox(key="patch_model").set_value("induction-constructed").run()
    assert at.multiselect(key="patch_receivers").value == ["L1H1"]
    assert at.radio(key="patch_receiver_input").value == "k"
    senders = frame_with(at, "sender")
    assert senders["sender"].iloc[0] == "L0H1" and bool(senders["ground truth"].iloc[0])
    key_plot = image_urls(at)[1]
    at.radio(key="patch_receiver_input").set_value("v").run()
    assert image_urls(at)[1] != key_plot
    at.multiselect(key="patch_receivers").set_value(["logits"]).run()
    assert not at.exception, at.exception
    assert at.radio(key="patch_receiver_input").options == ["resid"]
    assert "L1H1" in set(frame_with(at, "sender")["sender"])  # logits read every head


# ---- lesson 4: superposition -------------------------------------------------------------


def test_superposition_density_picks_an_instance_and_features_retrain():
    at = open_page("lab_pages/superposition.py")
    assert not [df for df in at.dataframe if "fed alone, passes" in df.value.columns]  # trained on request
    at.button(key="sup_train").click().run()
    table = frame_with(at, "fed alone, passes")
    assert len(table) == 5 and set(table["density"]) == {0.005}
    sparse_kept = (table["fed alone, passes"] > 0.5).sum()
    at.select_slider(key="sup_density").set_value(1.0).run()
    dense = frame_with(at, "fed alone, passes")
    assert set(dense["density"]) == {1.0}
    assert (dense["fed alone, passes"] > 0.5).sum() < sparse_kept  # dense keeps fewer than sparse

    at.slider(key="sup_features").set_value(7).run()
    assert not at.exception, at.exception
    assert len(frame_with(at, "fed alone, passes")) == 7
    at.slider(key="sup_hidden").set_value(3).run()  # no 2-d geometry: W^T W instead
    assert any("W^T W" in h for h in texts(at.subheader))


def test_superposition_phase_diagram_trains_on_request():
    at = open_page("lab_pages/superposition.py")
    before = len(image_urls(at))
    at.button(key="sup_train_pd").click().run()
    assert not at.exception, at.exception
    assert len(image_urls(at)) == before + 1
    assert any("Trained in" in c for c in texts(at.caption))


# ---- lesson 5: sparse autoencoders -------------------------------------------------------


def test_sae_page_scores_against_the_true_features_and_toggles_the_truth():
    at = open_page("lab_pages/sae.py")
    assert not at.metric  # trained on request
    at.button(key="sae_train").click().run()
    metrics = {m.label: float(m.value) for m in at.metric}
    assert metrics["MMCS"] > 0.9  # topk on the synthetic dictionary, 1000 steps
    table = frame_with(at, "latent")
    assert len(table) == 128 and table["latent"].is_unique
    urls = image_urls(at)
    at.toggle(key="sae_truth").set_value(False).run()
    assert image_urls(at) != urls


def test_sae_page_draws_the_pentagon_and_every_architecture_runs():
    at = open_page("lab_pages/sae.py")
    at.button(key="sae_train").click().run()
    at.selectbox(key="sae_data").set_value("toy model: 5 features in 2 dims (a pentagon)").run()
    assert not at.exception, at.exception
    assert any("true directions" in h for h in texts(at.subheader))
    assert len(frame_with(at, "latent")) == 5
    for arch in ("relu", "jumprelu"):
        at.selectbox(key="sae_arch").set_value(arch).run()
        assert not at.exception, at.exception
        assert 0.0 <= float(at.metric[0].value) <= 1.0


# ---- lesson 6: grokking ------------------------------------------------------------------


def test_grokking_slider_scrubs_the_shipped_run_and_the_truth_outlines_key_frequencies():
    at = open_page("lab_pages/grokking.py")
    phases = frame_with(at, "phase")
    assert next(iter(phases["phase"])) == "memorisation"
    last = {m.label: m.value for m in at.metric}
    urls = image_urls(at)
    steps = list(at.select_slider(key="grok_step").options)
    at.select_slider(key="grok_step").set_value(steps[0]).run()
    first = {m.label: m.value for m in at.metric}
    assert first["phase"] == "memorisation" and float(first["test accuracy"]) < float(last["test accuracy"])
    assert image_urls(at) != urls
    urls = image_urls(at)
    at.toggle(key="grok_truth").set_value(False).run()
    assert image_urls(at) != urls


def test_grokking_trains_a_small_prime_live():
    at = open_page("lab_pages/grokking.py")
    at.button(key="grok_train").click().run(timeout=300)
    assert not at.exception, at.exception
    report = " ".join(texts(at.markdown))
    assert "Stopped after" in report and "Key frequencies found" in report


def test_probes_page_traces_to_the_fact_store_and_scores_truth_above_decoys():
    at = open_page("lab_pages/probes.py")
    # factual-recall-split keeps its facts in two stores: lesson 12's page shows it, not this one
    assert at.selectbox(key="probe_model").options == ["factual-recall"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["MLP state restoring most"] == "MLP0 at subject"
    assert len(image_urls(at)) == 2  # tracing and probes; the interventions wait for their button
    at.button(key="probe_iia").click().run()
    assert not at.exception, at.exception
    table = frame_with(at, "IIA whole vector")
    das = next(c for c in table.columns if c.startswith("IIA DAS"))
    assert table[table["ground truth"]][das].min() >= 0.9
    assert table[~table["ground truth"]][das].max() <= 0.3
    assert table["probe accuracy"].max() >= 0.95
    urls = image_urls(at)
    assert len(urls) == 3  # tracing, probes, IIA bars

    at.toggle(key="probe_truth").set_value(False).run()
    assert not at.exception, at.exception
    assert all(u != v for u, v in zip(image_urls(at), urls))  # the outlines are gone from every plot
    assert "ground truth" not in frame_with(at, "IIA whole vector").columns

    at.toggle(key="probe_truth").set_value(True).run()
    at.selectbox(key="probe_variable").set_value("relation").run()
    assert not at.exception, at.exception
    new = image_urls(at)
    assert new[0] == urls[0] and new[1] != urls[1]  # the trace does not depend on the variable
    table = frame_with(at, "IIA whole vector")
    assert table["site"].iloc[0] == "blocks.0.attn.hook_z[2][head 1]"


# ---- lesson 7: validate your method ---------------------------------------------------------

VALIDATE = "lab_pages/validate.py"


def test_validate_page_runs_the_defaults_and_draws_curves_and_circuits():
    at = open_page(VALIDATE)
    assert at.multiselect(key="val_methods").value == ["eap", "attention-heuristic", "random"]
    assert at.multiselect(key="val_models").value == ["induction-constructed"]
    assert image_urls(at) == [] and any("press **Run**" in i.value for i in at.info)

    at.button(key="val_run").click().run(timeout=120)
    assert not at.exception, at.exception
    assert not at.warning, texts(at.warning)
    table = frame_with(at, "node_auroc")
    assert list(table["method"]) == ["eap", "attention-heuristic", "random"]
    auroc = dict(zip(table["method"], table["node_auroc"]))
    assert auroc["eap"] == 1.0 and auroc["attention-heuristic"] < 0.7  # the decoys fool the pattern heuristic
    urls = image_urls(at)
    assert len(urls) == 4  # ROC, faithfulness, the found circuit, the true circuit

    at.selectbox(key="val_show_method").set_value("attention-heuristic").run()
    assert not at.exception, at.exception
    assert image_urls(at)[2] != urls[2] and image_urls(at)[:2] == urls[:2]
    assert any("decoy heads L0H0 and L1H0" in c for c in texts(at.caption))

    shown = image_urls(at)
    at.toggle(key="val_truth").set_value(False).run()
    hidden = image_urls(at)
    assert len(hidden) == 3 and hidden[2] != shown[2]  # outlines gone, the true circuit hidden
    assert any("Ground truth hidden" in c for c in texts(at.caption))


def test_validate_page_keeps_the_last_run_until_run_is_pressed_again():
    at = open_page(VALIDATE)
    at.button(key="val_run").click().run(timeout=120)
    at.multiselect(key="val_methods").set_value(["random"]).run()
    assert not at.exception, at.exception
    assert len(frame_with(at, "node_auroc")) == 3  # still the last run's three methods
    assert any("Showing the last run" in c for c in texts(at.caption))
    at.button(key="val_run").click().run(timeout=120)
    assert list(frame_with(at, "node_auroc")["method"]) == ["random"]
    at.multiselect(key="val_methods").set_value([]).run()
    assert not at.exception and any("at least one method" in i.value for i in at.info)


def test_no_pages_folder_beside_home_so_the_sidebar_never_lists_file_names(lessons):
    """Streamlit lists a pages/ folder next to the main script by file name while a page loads,
    before st.navigation's titled list replaces it: the lab's pages live in lab_pages/."""
    assert not (APPS / "pages").exists()
    assert all(path.startswith("lab_pages/") and (APPS / path).is_file() for path, _ in lessons)
