import numpy as np

from device_app.learner.ridge import RidgeModel


def test_sherman_morrison_matches_direct_solution():
    rng = np.random.default_rng(1)
    model = RidgeModel(4, lam=0.5)
    xs, ys = rng.normal(size=(50, 4)), rng.normal(size=50)
    for x, y in zip(xs, ys):
        model.update(x, y)
    a = 0.5 * np.eye(4) + xs.T @ xs
    np.testing.assert_allclose(model.a_inv, np.linalg.inv(a), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.theta, np.linalg.solve(a, xs.T @ ys), rtol=1e-9)
    np.testing.assert_allclose(model.widths(xs[:3]) ** 2, np.einsum("ij,jk,ik->i", xs[:3], np.linalg.inv(a), xs[:3]))


def test_reset_falls_back_to_the_prior():
    model = RidgeModel(2, lam=2.0)
    model.update(np.array([1.0, 0.0]), 5.0)
    model.reset(np.array([3.0, -1.0]))
    np.testing.assert_allclose(model.theta, [3.0, -1.0])
    assert model.n == 0
