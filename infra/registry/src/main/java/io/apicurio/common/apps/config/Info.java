package io.apicurio.common.apps.config;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * Apicurio Registry 3.0.9's documentation annotation on configuration properties, whose
 * {@code category} is a {@link ConfigPropertyCategory}; 3.0.6's (the config-definitions jar
 * Maven Central serves) has a String there. This build's copy wins over the jar's.
 */
@Retention(RetentionPolicy.RUNTIME)
@Target({ElementType.FIELD, ElementType.METHOD, ElementType.PARAMETER, ElementType.TYPE})
public @interface Info {
    ConfigPropertyCategory category();

    String description() default "";

    String availableSince() default "";

    String registryAvailableSince() default "";

    String studioAvailableSince() default "";

    String[] seeAlso() default {};

    String[] dependsOn() default {};
}
