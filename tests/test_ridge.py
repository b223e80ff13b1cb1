import numpy as np

from device_app.learner.ridge import ArmRidge


def test_sherman_morrison_matches_the_direct_solution_for_every_model_in_the_bank():
    rng = np.random.default_rng(1)
    arms = rng.normal(size=(2, 6, 4))
    bank = ArmRidge(arms, lam=0.5)
    picks, ys = rng.integers(0, 6, 60), rng.normal(size=(60, 2))
    for k, y in zip(picks, ys):
        bank.update(int(k), y)
    for b in range(2):
        x = arms[b, picks]
        a = 0.5 * np.eye(4) + x.T @ x
        np.testing.assert_allclose(bank.a_inv[b], np.linalg.inv(a), rtol=1e-9, atol=1e-12)
        theta = np.linalg.solve(a, x.T @ ys[:, b])
        np.testing.assert_allclose(bank.theta[b, :, 0], theta, rtol=1e-9)
        np.testing.assert_allclose(bank.mean[b], arms[b] @ theta, rtol=1e-9)
        np.testing.assert_allclose(bank.width[b] ** 2, np.einsum("ij,jk,ik->i", arms[b], np.linalg.inv(a), arms[b]))


def test_one_model_updates_alone_and_resets_to_its_prior():
    arms = np.ones((2, 3, 2))
    bank = ArmRidge(arms, lam=2.0)
    bank.update(0, [5.0], slice(1, 2))
    assert list(bank.n) == [0, 1] and np.all(bank.theta[0] == 0) and np.all(bank.theta[1] > 0)
    bank.reset(1, np.array([3.0, -1.0]))
    np.testing.assert_allclose(bank.theta[1, :, 0], [3.0, -1.0])
    np.testing.assert_allclose(bank.mean[1], [2.0, 2.0, 2.0])
    assert bank.n[1] == 0


def test_soften_keeps_the_estimate_and_weighs_old_observations_less():
    rng = np.random.default_rng(2)
    arms = rng.normal(size=(1, 5, 3))
    bank = ArmRidge(arms, lam=1.0)
    for k in rng.integers(0, 5, 200):
        bank.update(int(k), [float(arms[0, k] @ [1.0, 2.0, 3.0])])
    mean, width = bank.mean.copy(), bank.width.copy()
    bank.soften(4.0)
    np.testing.assert_allclose(bank.mean, mean, rtol=1e-9)
    assert np.all(bank.width > 1.5 * width) and np.all(bank.width < 2.0 * width)  # up to sqrt(4): λ stays
    np.testing.assert_allclose(bank.a_inv[0], np.linalg.inv(bank.gram[0]), rtol=1e-9)
