# Reference solutions for lesson.py, beside this file: each cell replaces the exercise cell with the same header.
# ruff: noqa: F821  (the names these cells use are the lesson's, defined where the cells are spliced in)

# %% exercise="steering.diff_in_means"
def diff_in_means(model, target, batch):
    _, cache = model.run_with_cache(batch.tokens, names=[target.site.hook])
    x = cache[target.site.hook][:, target.site.pos]  # [batch, d_model]
    labels = target.read(batch.tokens)  # [batch]: the relation each prompt asks for
    directions = torch.stack([x[labels == v].mean(0) - x[labels != v].mean(0) for v in range(target.n_values)])
    return directions / directions.norm(dim=-1, keepdim=True)  # [value, d_model], unit rows


# %% exercise="steering.success"
def steer_success(model, target, steer, batch, alpha):
    answer = target.task.positions["answer"]
    goals = target.goal(target.read(batch.tokens))  # [batch]: the value each prompt is steered to
    want = target.expected(batch)[:, answer]  # [batch]: the algorithm's answer once the steer has worked
    changed = want != batch.targets[:, answer]  # the prompts whose answer should change
    with steered(model, steer.site.hook, steer.vectors[goals], alpha * steer.scale, positions=str(steer.site.pos)):
        got = model(batch.tokens)[:, answer].argmax(-1)
    return float((got == want)[changed].float().mean())


# %% exercise="steering.predict"
r1 = torch.full((len(predict_batch.tokens),), 1)  # relation := r1 on every prompt
predicted = [task.output_names[int(a)] for a in algorithm.assign(predict_batch, "relation", r1)[:, 3]]
print(predicted)

# %% exercise="steering.set_steer"
def set_steer_logits(model, target, fit_batch, batch, site):
    _, cache = model.run_with_cache(fit_batch.tokens, names=[site.hook])
    x = cache[site.hook][:, site.pos]  # [batch, d] or, for a head's hook, [batch, head, d_head]
    if site.head is not None:
        x = x[:, site.head]
    labels = target.read(fit_batch.tokens)
    means = torch.stack([x[labels == v].mean(0) for v in range(target.n_values)])  # [value, d]
    goals = target.goal(target.read(batch.tokens))
    with steered(model, site.hook, means[goals], 1.0, positions=str(site.pos), head=site.head, mode="set"):
        return model(batch.tokens)


# %% exercise="steering.strong_sources"
strong_sources = {source for source in brackets_comparison.results
                  if brackets_comparison.summary(source)["success"][0] >= SUCCESS_BAR}
print(strong_sources)
