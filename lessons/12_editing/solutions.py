# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.
# ruff: noqa: F821  (the names these cells use are the lesson's, defined where the cells are spliced in)

# %% exercise="editing.key"
def read_key(model, task, edit, layer):
    tokens = task.make_batch(torch.tensor([edit.subject]), torch.tensor([edit.relation])).tokens  # form 0
    hook = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(tokens, names=[hook])
    return cache[hook][0, task.positions["subject"]]  # [d_mlp]


# %% exercise="editing.key_moment"
def key_moment(model, task, layer):
    hook = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(task.all_facts().tokens, names=[hook])
    keys = cache[hook][:, task.positions["subject"]].double()  # [fact * form, d_mlp]
    return keys.T @ keys / len(keys)


# %% exercise="editing.rank_one"
def rank_one_edit(model, layer, k, C, delta):
    ridge = methods.EditConfig().ridge * C.diagonal().mean()
    c_inv_k = torch.linalg.solve(C + ridge * torch.eye(len(C), dtype=C.dtype), k)  # [d_mlp]
    update = torch.outer(c_inv_k, delta) / (k @ c_inv_k)  # [d_mlp, d_model]
    edited = copy_model(model)
    with torch.no_grad():
        W_out = edited.blocks[layer].mlp.W_out
        W_out += update.to(W_out.dtype)
    return edited


# %% exercise="editing.score"
def efficacy_specificity(original, edited, task, edit):
    prompt = task.make_batch(torch.tensor([edit.subject]), torch.tensor([edit.relation])).tokens  # form 0
    efficacy = float(edited(prompt)[0, -1].argmax() == edit.attribute)
    everything = task.all_facts()  # every fact in every form
    answer = everything.targets[:, -1]  # the table's answers
    other = task.variables(everything.tokens)["subject"] != edit.subject
    knew = other & (original(everything.tokens)[:, -1].argmax(-1) == answer)
    still = edited(everything.tokens)[:, -1].argmax(-1) == answer
    return efficacy, float(still[knew].float().mean())


# %% exercise="editing.predict"
s, r = predict_edit.subject, predict_edit.relation
prediction = {"form_2": predict_edit.attribute,  # a paraphrase of the edited fact: the new attribute
              "other_relation": int(stask.table[s, (r + 1) % stask.n_relations]),  # the subject's other facts stay
              "other_subject": int(stask.table[(s + 1) % stask.n_subjects, r])}  # so do other subjects'
print(prediction)

# %% exercise="editing.localisation"
layers = list(where.layers)
halves = {layer: [i for i, stored_in in enumerate(stored) if stored_in == layer] for layer in (0, 1)}
peaks = where.trace_peak.tolist()
localisation = {
    "trace_peak": {layer: peaks[rows[0]] for layer, rows in halves.items()},
    "mean_S": {(a, b): round(float(where.edit_scores[halves[a], layers.index(b)].mean()), 3)
               for a in (0, 1) for b in (0, 1)},
}
localisation["other_layer_works"] = min(localisation["mean_S"][(0, 1)], localisation["mean_S"][(1, 0)]) >= 0.8
print(localisation)
