package io.apicurio.common.apps.config;

/**
 * The categories Apicurio Registry 3.0.9's configuration properties are filed under (its
 * {@code @Info(category = ...)}). The enum belongs to apicurio-registry-config-definitions 3.0.9,
 * which Maven Central does not serve; 3.0.6's jar (used instead) predates it.
 */
public enum ConfigPropertyCategory {
    CATEGORY_API,
    CATEGORY_AUTH,
    CATEGORY_CACHE,
    CATEGORY_CCOMPAT,
    CATEGORY_DOWNLOAD,
    CATEGORY_GITOPS,
    CATEGORY_HEALTH,
    CATEGORY_IMPORT,
    CATEGORY_LIMITS,
    CATEGORY_REDIRECTS,
    CATEGORY_REST,
    CATEGORY_SEMVER,
    CATEGORY_STORAGE,
    CATEGORY_SYSTEM,
    CATEGORY_UI
}
